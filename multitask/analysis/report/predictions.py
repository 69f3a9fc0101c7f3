"""One predictions table made ready for the report's analyses, and what several of them share.

    p = Predictions(table=..., heads=..., probs=..., targets=..., composite=[mask, gender, age], source=path)
    p.decided("age")          # the class each image was given: pred/<head> (tuned decisions), else the argmax

Every analysis scores the decided labels, as `compare` and predict's scores.json do: a run whose tuned decisions
were applied is judged by what it decided, not by its argmax. Scores are stats.py's: per-head macro F1 over all the
head's classes, composite macro F1 over the classes present (the competition metric).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ...heads import UNLABELLED, HeadSpec, composite_encode
from ...metrics.table import COMPOSITE, PRED, TRUE
from .html import Tile

IDENTITY = {"image_id", "path", "group", "age_years", "ImageID"}


@dataclass
class Predictions:
    """One predictions table made ready for analysis; `notes` collects what could not be used and why."""

    table: pd.DataFrame
    heads: list[HeadSpec]
    probs: dict[str, np.ndarray]
    targets: dict[str, np.ndarray]
    composite: list[HeadSpec]
    source: Path
    notes: list[str] = field(default_factory=list)

    def decided(self, head: str) -> np.ndarray:
        """(N,) the class each image was given: the table's pred/<head> (argmax of log p + the run's tuned offsets,
        when decisions were applied), else the argmax of its probabilities."""
        column = f"{PRED}{head}"
        if column in self.table.columns:
            return pd.to_numeric(self.table[column], errors="coerce").fillna(-1).to_numpy(np.int64)
        return self.probs[head].argmax(1)

    def moved(self, head: str) -> int:
        """How many images tuned decisions moved off the argmax for this head."""
        return int((self.decided(head) != self.probs[head].argmax(1)).sum())


def composite_pairs(p: Predictions):
    """(rows, y_true, y_pred) composite codes on rows where every composite head is labelled; None when impossible."""
    if not p.composite:
        return None
    names = [h.name for h in p.composite]
    if f"{PRED}{COMPOSITE}" in p.table.columns:
        y_pred = p.table[f"{PRED}{COMPOSITE}"].to_numpy(np.int64)
    else:
        y_pred = composite_encode({n: p.decided(n) for n in names}, p.composite)
    if all(n in p.targets for n in names):
        y_true = composite_encode({n: p.targets[n] for n in names}, p.composite)
    elif f"{TRUE}{COMPOSITE}" in p.table.columns:
        y_true = p.table[f"{TRUE}{COMPOSITE}"].to_numpy(np.int64)
    else:
        return None
    rows = np.flatnonzero(y_true != UNLABELLED)
    return (rows, y_true[rows], y_pred[rows]) if len(rows) else None


def tile(p: Predictions, row: int, lines: list[str], thumbs, bad: bool = True) -> Tile:
    path = p.table["path"].iloc[row] if "path" in p.table.columns else ""
    return Tile(thumbs(path), [str(p.table["image_id"].iloc[row]), *lines], bad)


def binned_head(p: Predictions) -> HeadSpec | None:
    """The head whose classes are bins of a number (age in years): the one the age analysis is about."""
    return next((h for h in p.heads if h.eval_bins or h.bins), None)


def _cell(table: pd.DataFrame, column: str, row: int) -> str:
    if column not in table.columns or pd.isna(table[column].iloc[row]):
        return ""
    return str(table[column].iloc[row])


def slugify(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "head"
