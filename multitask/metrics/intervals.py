"""Intervals on a predictions table: every macro F1 with a 95% bootstrap interval, resampling people.

    pairs = pairs_of(table, heads, probs, targets)       # {composite, head...: (truth, decided label, classes, ...)}
    scores = score_intervals(table, pairs)                # {metric: (observed, lo, hi)}, as predict --gt writes them

Resampling: whole people when the table has a `group` column (oof.csv, predict with a gt that names the person),
else the `group_by` columns, else single images (7 photos of one person err together, so per-image intervals
come out too narrow). `multitask compare` builds its paired differences on the same pieces (analysis/compare.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..utils.errors import UserError
from .stats import group_draws, macro_f1, on_draws, percentile_interval
from .table import COMPOSITE, PRED, TRUE

Pair = tuple[np.ndarray, np.ndarray, int, bool]   # truth, prediction, classes, macro over present classes only


@dataclass
class Scores:
    """One table's scores: {metric: (observed, lo, hi)}, and how they were resampled."""
    values: dict[str, tuple[float, float, float]]
    draws: int
    units: str          # "people" or "images"
    groups: int

    def as_json(self) -> dict:
        out: dict = {f"{k}/f1_ci95": [lo, hi] for k, (_, lo, hi) in self.values.items()}
        out["intervals"] = {"level": 0.95, "draws": self.draws, "resampled": self.units, "groups": self.groups}
        return out


def pairs_of(table: pd.DataFrame, heads, probs: dict, targets: dict) -> dict[str, Pair]:
    """{composite, head...: (truth, prediction, classes, present_only)} for every head the table has truth for
    (`read_table`'s four parts); a head (or the composite) with no labelled row has nothing to score and is left
    out (a manifest of mask photos scores the mask head alone)."""
    out: dict[str, Pair] = {}
    composite = (f"{TRUE}{COMPOSITE}", f"{PRED}{COMPOSITE}")
    if all(c in table.columns for c in composite):
        truth, pred = (table[c].fillna(-1).to_numpy(np.int64) for c in composite)
        if (truth >= 0).any():
            # the competition's metric: macro over the classes present (sklearn's default), as predict and training
            out[COMPOSITE] = (truth, pred, int(max(truth.max(), pred.max(), 0)) + 1, True)
    for h in heads:
        if h.name in targets and (np.asarray(targets[h.name]) >= 0).any():   # the decided class (tuned decisions
            # may move it off the argmax)
            column = f"{PRED}{h.name}"
            pred = table[column].to_numpy(np.int64) if column in table.columns else probs[h.name].argmax(1)
            out[h.name] = (targets[h.name], pred, h.num_classes, False)
    return out


def take_rows(pair: Pair, rows: np.ndarray) -> Pair:
    truth, pred, classes, present = pair
    return truth[rows], pred[rows], classes, present


def groups_of(table: pd.DataFrame, group_by: list[str] | None = None) -> tuple[np.ndarray, str]:
    """(one group id per row, 'people' or 'images'): the person when known, else the given columns, else the row."""
    missing = [c for c in group_by or () if c not in table.columns]
    if missing:   # checked even where the group column wins: a typo must not pass unseen
        raise UserError(f"--group-by: no column {missing[0]!r} in the table; columns: {', '.join(table.columns)}")
    if "group" in table.columns and (table["group"].notna() & (table["group"].astype(str) != "")).all():
        return table["group"].astype(str).to_numpy(), "people"
    if group_by:
        return table[group_by].astype(str).agg("|".join, axis=1).to_numpy(), "groups of " + "+".join(group_by)
    return np.arange(len(table)).astype(str), "images"


def score_intervals(table: pd.DataFrame, pairs: dict[str, Pair], *, draws: int = 1000, seed: int = 0,
                    group_by: list[str] | None = None) -> Scores:
    """Macro F1 of the composite and each head of one predictions table (`pairs_of` it), with 95% intervals: what
    `predict --gt` writes into scores.json, computed on the table in memory."""
    groups, units = groups_of(table, group_by)
    samples = group_draws(groups, draws=draws, seed=seed)
    return Scores(values={k: summary(*resampled(pair, samples)) for k, pair in pairs.items()}, draws=draws,
                  units=units, groups=len(np.unique(groups)))


def resampled(pair: Pair, samples: list[np.ndarray]) -> tuple[float, np.ndarray]:
    """(macro F1 on every row, macro F1 on each bootstrap sample)."""
    truth, pred, classes, present_only = pair
    f1 = lambda idx: macro_f1(truth[idx], pred[idx], classes, present_only=present_only)  # noqa: E731
    return f1(np.arange(len(truth))), on_draws(f1, samples)


def summary(observed: float, values: np.ndarray) -> tuple[float, float, float]:
    return (observed, *percentile_interval(values))


