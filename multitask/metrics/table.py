"""The predictions table shared by training (oof.csv), `predict` (predictions.csv) and `report`.

One self-describing CSV: every column name says what it holds, so a reader needs no side file.

    image_id, path, group            identity (group = person id where known)
    prob/<head>/<class>              probability of each class of each head
    pred/<head>, true/<head>         class indices (-1 = unlabelled / unknown); pred is the decided class (argmax,
                                     or with tuned decisions argmax of log p + offsets: decisions/)
    pred/<head>/years                a years head's (target: years) expected age in years, sum of year x p
    pred/composite, true/composite   the composite label over the composite heads (the 18 classes)
    composite/heads                  the composite's heads in order, e.g. mask,gender,age (the first one counts most)
    bins/<head>                      the edges that make a numeric value (age in years) into that head's classes
    anything else                    metadata kept for breakdowns (age_years = the true age, gender, race, ...)

composite/heads and bins/<head> hold the same text on every row: a CSV has no other place for a table's own facts.

A derived head (the single 18-class baseline) is expanded: its components get marginal probabilities, so every
consumer can treat mask / gender / age alike.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ..heads import HeadSpec, composite_encode, composite_size
from ..utils.errors import UserError

PROB, PRED, TRUE, BINS = "prob/", "pred/", "true/", "bins/"
YEARS_SUFFIX = "/years"   # pred/<head>/years
COMPOSITE = "composite"
COMPOSITE_HEADS = "composite/heads"


def composite_prediction(probs: Mapping[str, np.ndarray], composite: Sequence[HeadSpec]) -> np.ndarray | None:
    """Per-head argmax combined by the composite encoding (None when a composite head is missing)."""
    if not composite or any(h.name not in probs for h in composite):
        return None
    return composite_encode({h.name: np.asarray(probs[h.name]).argmax(1) for h in composite}, composite)


def build_table(*, ids: Sequence, paths: Sequence, heads: Sequence[HeadSpec], probs: Mapping[str, np.ndarray],
                targets: Mapping[str, np.ndarray] | None = None, composite: Sequence[HeadSpec] = (),
                composite_pred: np.ndarray | None = None, preds: Mapping[str, np.ndarray] | None = None,
                meta: pd.DataFrame | None = None, years: Mapping[str, np.ndarray] | None = None) -> pd.DataFrame:
    """The table; `preds` holds decided labels per head (predict's tuned decisions; a head missing there gets its
    argmax), `years` the expected age of each years head ({head: (N,)}) for pred/<head>/years."""
    columns: dict[str, object] = {"image_id": list(ids), "path": [str(p) for p in paths]}
    for head in heads:
        p = np.asarray(probs[head.name], dtype=np.float64)
        for j, name in enumerate(head.classes):
            columns[f"{PROB}{head.name}/{name}"] = np.round(p[:, j], 6)
        columns[f"{PRED}{head.name}"] = (preds or {}).get(head.name, p.argmax(1))
        if years is not None and head.name in years:
            columns[years_column(head.name)] = np.round(np.asarray(years[head.name], dtype=np.float64), 3)
        if targets is not None and head.name in targets:
            columns[f"{TRUE}{head.name}"] = np.asarray(targets[head.name], dtype=np.int64)
    if composite_pred is None:
        composite_pred = composite_prediction(probs, composite)
    if composite_pred is not None:
        columns[f"{PRED}{COMPOSITE}"] = composite_pred
        if targets is not None and all(h.name in targets for h in composite):
            columns[f"{TRUE}{COMPOSITE}"] = composite_encode({h.name: targets[h.name] for h in composite}, composite)
        columns[COMPOSITE_HEADS] = ",".join(h.name for h in composite)
    for head in heads:
        edges = head.eval_bins or head.bins
        if edges:
            columns[f"{BINS}{head.name}"] = ",".join(f"{e:g}" for e in edges)
    table = pd.DataFrame(columns)
    if meta is not None:
        for col in meta.columns:
            if col not in table.columns:
                table[col] = meta[col].to_numpy()
    return table


def years_column(head: str) -> str:
    return f"{PRED}{head}{YEARS_SUFFIX}"


def read_table(path: str | Path) -> tuple[pd.DataFrame, list[HeadSpec], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(table, heads with class names and bins from the column names, probabilities, targets)."""
    table = pd.read_csv(path, keep_default_na=False, na_values=[""],
                        dtype={"image_id": str, "group": str, COMPOSITE_HEADS: str})
    heads: dict[str, list[str]] = {}
    for col in table.columns:
        if col.startswith(PROB):
            head, _, cls = col[len(PROB):].partition("/")
            heads.setdefault(head, []).append(cls)
    specs = [HeadSpec(name=name, classes=classes, eval_bins=_first_list(table, f"{BINS}{name}"))
             for name, classes in heads.items()]
    probs = {h.name: table[[f"{PROB}{h.name}/{c}" for c in h.classes]].to_numpy(dtype=np.float64) for h in specs}
    targets = {h.name: table[f"{TRUE}{h.name}"].to_numpy(dtype=np.int64)
               for h in specs if f"{TRUE}{h.name}" in table.columns}
    return table, specs, probs, targets


def load_table(path: str | Path, *, expected: Mapping[str, Sequence[str]] | None = None
               ) -> tuple[pd.DataFrame, list[HeadSpec], dict, dict, list[HeadSpec]]:
    """`read_table` plus the composite, checked for what every consumer needs (report, compare, predict's
    intervals): readable, image_id and prob/ columns, rows, each head's classes as `expected` lists them (a run's
    config), and no class index beyond a head's (or the composite's) columns. A dropped prob/<head>/<class> column
    would otherwise score as a smaller head: an age head missing >=60 reads as a 2-class head with a macro F1 it
    never earned. One UserError line."""
    try:
        table, heads, probs, targets = read_table(path)
        composite = table_composite(table, heads)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, KeyError, ValueError) as err:
        raise UserError(f"{path}: not a readable predictions table ({str(err).splitlines()[0]})") from None
    if not heads or "image_id" not in table.columns:
        raise UserError(f"{path}: expected columns image_id and prob/<head>/<class> (a table written by "
                        f"`multitask train` or `multitask predict`), found {', '.join(table.columns[:8])}")
    if table.empty:
        raise UserError(f"{path}: no rows")
    for head in heads:
        want = list((expected or {}).get(head.name, head.classes))
        if list(head.classes) != want:
            missing = [c for c in want if c not in head.classes]
            what = (f"no column {PROB}{head.name}/{missing[0]}" if missing else
                    f"columns {PROB}{head.name}/{', '.join(head.classes)}")
            raise UserError(f"{path}: {what}, but the run's config gives head {head.name} the classes "
                            f"{', '.join(want)}; every class needs its probability column")
    check_probabilities(path, table, heads, probs)
    check_classes(path, table, heads, composite)
    return table, heads, probs, targets, composite


def check_probabilities(path, table: pd.DataFrame, heads: Sequence[HeadSpec], probs: Mapping[str, np.ndarray]
                        ) -> None:
    """Every prob/ cell a probability: finite and in [0, 1] (a NaN or 7.0 would otherwise pick a class and score)."""
    for head in heads:
        p = probs[head.name]
        bad = ~np.isfinite(p) | (p < 0) | (p > 1 + 1e-6)   # 1e-6: the table's own rounding
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise UserError(f"{path}: column {PROB}{head.name}/{head.classes[col]} holds {float(p[row, col])} (image "
                            f"{table['image_id'].iloc[row]!r}); a probability is a number from 0 to 1")


def check_classes(path, table: pd.DataFrame, heads: Sequence[HeadSpec], composite: Sequence[HeadSpec]) -> None:
    """Every pred/ and true/ cell of a head (and the composite) a class index below its class count, or -1 (unknown
    truth); an empty cell only where readers take it for unknown. A -5 would score as a class nobody has."""
    limits = [(h.name, h.num_classes, f"the table has only {h.num_classes} prob/{h.name}/ columns "
               f"({', '.join(h.classes)}); every class needs its probability column (was one dropped?)")
              for h in heads]
    if composite:
        size = composite_size(composite)
        limits.append((COMPOSITE, size, f"the heads {', '.join(h.name for h in composite)} give only {size} "
                       f"composite classes; a head's prob/<head>/<class> columns are incomplete"))
    for name, limit, why in limits:
        for column in (f"{PRED}{name}", f"{TRUE}{name}"):
            if column not in table.columns:
                continue
            values = pd.to_numeric(table[column], errors="coerce")
            top = values.max()
            if top >= limit:
                raise UserError(f"{path}: column {column} holds class {top:.0f}, but {why}")
            fraction = values.notna() & (values != values.round())
            bad = (table[column].notna() & values.isna()) | fraction | (values < -1)
            if bad.any():
                row = int(np.argmax(bad.to_numpy()))
                raise UserError(f"{path}: column {column} holds {table[column].iloc[row]} (image "
                                f"{table['image_id'].iloc[row]!r}); expected a class index 0 to {limit - 1}, or -1 "
                                f"for unknown")


def table_composite(table: pd.DataFrame, heads: Sequence[HeadSpec]) -> list[HeadSpec]:
    """The composite's heads in the order the table records (composite/heads); [] when it records none."""
    if COMPOSITE_HEADS not in table.columns or table.empty:
        return []
    by_name = {h.name: h for h in heads}
    names = str(table[COMPOSITE_HEADS].iloc[0]).split(",")
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ValueError(f"{COMPOSITE_HEADS} names {', '.join(missing)}, which the table has no prob/ columns for")
    return [by_name[n] for n in names]


def _first_list(table: pd.DataFrame, column: str) -> list[float] | None:
    if column not in table.columns or table.empty:
        return None
    return [float(v) for v in str(table[column].iloc[0]).split(",")]
