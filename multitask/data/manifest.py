"""A generic CSV data source: one row per image, one column per head, blanks for what a source does not label.

    path,mask,gender,age,group,source
    faces/a.jpg,wear,female,,p1,ours          <- age unlabelled for this row
    /data/b.png,2,-1,>=60,p2,other            <- mask by class index, gender unlabelled

    frame = read_manifest("data/merged.csv", cfg.heads)

`path` is relative to the CSV's folder (or absolute). A head's column holds a class name or a class index; blank or -1
means unlabelled. A head column the CSV lacks leaves that head unlabelled for every row, so sets labelled for
different heads merge by concatenating their CSVs. A head's column holds classes, never years: ages in years go in a
`<head>_years` column (age_years), binned by the head's `bins` for a class head and learnt as years by a years head;
where a row has both, they must agree (the years binned by eval_bins give its class). Years are ASCII decimal
numbers inside the head's `years_range` (blank: unknown); any other cell is refused naming its line.
`group` (person id) keeps one person's photos in one fold; without it every row is its own group (a path listed
again: its first row's).
Other columns are kept as metadata (reports can slice by them).
"""
from __future__ import annotations

import math
import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from ..heads import UNLABELLED, HeadSpec, class_index, years_source
from ..utils.errors import UserError
from ..utils.io import read_csv_text


def read_manifest(csv_path: str | os.PathLike, heads: Mapping[str, HeadSpec]) -> pd.DataFrame:
    """Columns: path (absolute), group, one per present head (class name or None), then metadata columns."""
    csv_path = Path(csv_path)
    table = _read(csv_path)
    if "path" not in table.columns:
        raise UserError(f"{csv_path}: missing column 'path'; found {', '.join(table.columns) or 'none'}")
    if table.empty:
        raise UserError(f"{csv_path}: no rows; expected one image per row")
    out = pd.DataFrame({"path": _paths(csv_path, table["path"])})
    # a row without a group is its own person; a path listed again is the person of its first row (one fold)
    first = out["path"].map({p: i for i, p in reversed(list(enumerate(out["path"])))})
    own = "row" + first.astype(str)
    if "group" in table.columns:
        groups = table["group"].str.strip()
        out["group"] = groups.where(groups != "", own)
    else:
        out["group"] = own
    by_source: dict[str, list[HeadSpec]] = defaultdict(list)
    for spec in heads.values():
        if not spec.derive:  # derived heads (composite) have no column of their own
            by_source[spec.source].append(spec)
    for source, specs in by_source.items():
        if source in table.columns:
            out[source] = _labels(csv_path, source, table[source], specs)
        column = years_source(specs[0])
        if column in table.columns:
            out[column] = _years(csv_path, column, table[column], specs)
    for column in table.columns:
        if column not in out.columns:
            out[column] = _metadata(table[column])
    for spec in heads.values():
        _check_years_agree(csv_path, out, spec)
    return out


def _check_years_agree(csv_path: Path, frame: pd.DataFrame, spec: HeadSpec) -> None:
    """A row that gives both a class (`age`) and years (`age_years`) must give the same class: the years binned by
    the head's eval_bins (the classes' own edges: training bins may cut elsewhere on purpose)."""
    column = years_source(spec)
    edges = spec.eval_bins or spec.bins
    if spec.derive or edges is None or column not in frame.columns or spec.source not in frame.columns:
        return
    years = frame[column].to_numpy(dtype=float)
    classes = np.array([class_index(spec, v) for v in frame[spec.source]])
    both = np.isfinite(years) & (classes != UNLABELLED)
    clash = both & (np.digitize(np.nan_to_num(years), edges) != classes)
    if clash.any():
        row = int(np.argmax(clash))
        raise UserError(f"{csv_path} line {row + 2}: {column} {years[row]:g} is class "
                        f"{spec.classes[np.digitize(years[row], edges)]} of head {spec.name} (edges "
                        f"{', '.join(f'{e:g}' for e in edges)}) but column {spec.source} says "
                        f"{spec.classes[classes[row]]}; make them agree or leave one blank")


def _read(csv_path: Path) -> pd.DataFrame:
    if not csv_path.is_file():
        raise UserError(f"manifest not found: {csv_path} (data.manifest); expected a CSV with a 'path' column")
    return read_csv_text(csv_path)


def _paths(csv_path: Path, column: pd.Series) -> list[str]:
    base = csv_path.resolve().parent
    out = []
    for line, text in enumerate(column, start=2):
        text = text.strip()
        if not text:
            raise UserError(f"{csv_path} line {line}: empty path; every row needs an image path")
        path = os.path.abspath(base / os.path.expanduser(text))  # an absolute `text` wins over `base`
        if not os.path.isfile(path):
            raise UserError(f"{csv_path} line {line}: image not found: {text} (looked at {path}); paths are "
                            f"relative to the CSV's folder or absolute")
        out.append(path)
    return out


def _labels(csv_path: Path, column: str, values: pd.Series, specs: list[HeadSpec]) -> list:
    """Validate a head column; normalise to class names when one head reads it."""
    out = []
    for line, value in enumerate(values, start=2):
        indices = []
        for spec in specs:
            try:
                indices.append(class_index(spec, value))
            except ValueError:
                raise UserError(f"{csv_path} line {line}, column {column}: unknown class {value!r} for head "
                                f"{spec.name}; expected one of {', '.join(spec.classes)}, an index "
                                f"0..{spec.num_classes - 1}, or blank / -1 for unlabelled") from None
        if len(specs) == 1:
            out.append(None if indices[0] == UNLABELLED else specs[0].classes[indices[0]])
        else:  # several heads read this column with different classes: keep the raw value, each head re-reads it
            out.append(None if indices[0] == UNLABELLED else value.strip())
    return pd.Series(out, dtype=object)


# a decimal number in ASCII digits: float() would also read '٤٥', 'nan', 'inf' or '1_0', which no age column means
YEARS_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _years(csv_path: Path, column: str, values: pd.Series, specs: list[HeadSpec]) -> pd.Series:
    """A `<head>_years` column as float years (NaN where blank); a cell that is not a decimal number, or years
    outside a head's years_range, is one line naming its row and value."""
    out = np.full(len(values), np.nan)
    for row, text in enumerate(values):
        text = text.strip()
        if not text:
            continue
        where = f"{csv_path} line {row + 2}, column {column}"
        if not YEARS_NUMBER.fullmatch(text):
            raise UserError(f"{where}: {text!r} is not a number of years; expected a decimal number such as 45 or "
                            f"45.5 (ASCII digits), or blank for unknown")
        years = float(text)
        for spec in specs:
            low, high = spec.years_range
            if not (math.isfinite(years) and low <= years <= high):
                raise UserError(f"{where}: {text} years is outside heads.{spec.name}.years_range [{low}, {high}]; "
                                f"fix the row, leave it blank for unknown, or widen heads.{spec.name}.years_range")
        out[row] = years
    return pd.Series(out)


def _metadata(column: pd.Series) -> pd.Series:
    """Numbers stay numbers (blank -> NaN) so reports can bin them; anything else stays text."""
    stripped = column.str.strip()
    numeric = pd.to_numeric(stripped.where(stripped != ""), errors="coerce")
    if numeric.notna().sum() == (stripped != "").sum() and (stripped != "").any():
        return numeric
    return column
