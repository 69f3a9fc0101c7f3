"""Reading a head's labels from a table (class names, indices, ages in years binned by the head's edges), and
resolving the configured heads once after config load (names filled, derived heads checked against their parts).
"""
from __future__ import annotations

import math
import re
from typing import Mapping

import numpy as np

from .composite import composite_encode, composite_size
from .spec import DEFAULT_YEARS_LOSS, UNLABELLED, YEAR_LOSS_NAMES, YEARS_COLUMN_SUFFIX, HeadSpec


def label_array(spec: HeadSpec, frame, heads: Mapping[str, HeadSpec], *, eval: bool = False) -> np.ndarray:
    """Class indices for one head from a data frame (-1 = unlabelled).

    Ages in years (a numeric `<head>` column, as the competition's folders give, or a `<head>_years` column, as a
    manifest may) are binned by the head's `bins` (`eval_bins` when scoring); where a row has no years, the
    `<head>` column's class name or index is its label.
    """
    if spec.derive:
        parts = [heads[name] for name in spec.derive]
        return composite_encode({p.name: label_array(p, frame, heads, eval=eval) for p in parts}, parts)
    years = years_array(spec, frame)
    edges = (spec.eval_bins or spec.bins) if eval else spec.bins
    column = frame[spec.source] if spec.source in frame.columns else None
    if column is None or _numeric(column) and edges is not None:
        classes = np.full(len(frame), UNLABELLED, dtype=np.int64)
    else:
        classes = np.array([class_index(spec, value) for value in column], dtype=np.int64)
    if edges is None or not np.isfinite(years).any():
        return classes
    binned = np.digitize(np.nan_to_num(years, nan=0.0), edges)
    return np.where(np.isfinite(years), binned, classes).astype(np.int64)


def years_source(spec: HeadSpec) -> str:
    """A manifest's column of ages in years for this head: `<head>_years` (e.g. age_years)."""
    return f"{spec.source}{YEARS_COLUMN_SUFFIX}"


def years_array(spec: HeadSpec, frame) -> np.ndarray:
    """Ages in years (float, NaN where unknown): the `<head>_years` column, else a numeric `<head>` column (the
    competition's folder ages); a `<head>` column of class names or indices gives none (its rows train a years
    head's class losses only)."""
    for name in (years_source(spec), spec.source):
        if name in frame.columns and _numeric(frame[name]):
            return frame[name].to_numpy(dtype=np.float64)
    return np.full(len(frame), np.nan)


def _numeric(column) -> bool:
    """A column of numbers (numpy's or pandas' own dtypes; pandas' string dtype is not one)."""
    return getattr(column.dtype, "kind", "O") in "iuf"


def class_index(spec: HeadSpec, value) -> int:
    """A class name or index -> index; blank / NaN / -1 -> -1; anything else is an error naming the choices."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return UNLABELLED
    text = str(value).strip()
    if text in ("", "-1", "nan", "None"):
        return UNLABELLED
    if text in spec.classes:
        return spec.classes.index(text)
    lowered = [c.lower() for c in spec.classes]
    if text.lower() in lowered:
        return lowered.index(text.lower())
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        number = float(value)
    else:   # ASCII digits only (float() would read '٢' or '1_0'); '2.0' is how pandas writes a float column's 2
        found = re.fullmatch(r"([0-9]+)(\.0*)?", text)
        number = float(found.group(1)) if found else None
    if number is not None and number.is_integer() and 0 <= int(number) < spec.num_classes:
        return int(number)
    raise ValueError(f"head {spec.name}: unknown class {value!r}; expected one of {spec.classes} "
                     f"or an index 0..{spec.num_classes - 1}")


def resolve_heads(heads: Mapping[str, HeadSpec]) -> dict[str, HeadSpec]:
    """Fill names and check cross-references (derive) once, after config load."""
    out = {}
    for name, spec in heads.items():
        spec.name = name
        spec.validate()
        if spec.target == "years" and not any(n in YEAR_LOSS_NAMES for n in spec.loss):
            spec.loss = {**DEFAULT_YEARS_LOSS, **spec.loss}
        out[name] = spec
    for spec in out.values():
        if spec.derive:
            unknown = [d for d in spec.derive if d not in out]
            if unknown:
                raise ValueError(f"heads.{spec.name}.derive: unknown head(s) {unknown}; configured: {list(out)}")
            size = composite_size([out[d] for d in spec.derive])
            if size != spec.num_classes:
                raise ValueError(f"heads.{spec.name}: derives {spec.derive} with {size} combinations "
                                 f"but lists {spec.num_classes} classes")
    return out
