"""The report's breakdowns: composite and per-head scores for each value of each metadata column (gender, race,
fold, source, ...): a group far below the rest points at a bias the validation mean hides."""
from __future__ import annotations

import numpy as np

from ...heads import UNLABELLED
from ...metrics.stats import macro_f1
from . import figures as figs
from .html import Section
from .predictions import IDENTITY, Predictions, composite_pairs, slugify


def analyse_breakdowns(p: Predictions):
    table = p.table
    # metadata: the columns that are neither identity nor prob/pred/true/..., with few enough values to group by
    columns = [c for c in table.columns if "/" not in c and c not in IDENTITY and 1 <= table[c].nunique() <= 30]
    if not columns:
        p.notes.append("breakdowns: no metadata columns (e.g. gender, race, fold) in the table")
        return None
    comp = composite_pairs(p)
    heads = [h for h in p.heads if h.name in p.targets]
    section = Section(id="breakdowns", title="Breakdowns by metadata")
    section.text("Per value of each metadata column (source, gender, race, fold, ...): images, the composite's "
                 "accuracy and macro F1, each head's accuracy and macro F1 on the decided labels. A group far below "
                 "the rest points at a bias the validation mean hides.")
    numbers = {column: [group_scores(p, comp, heads, values == value, value) for value in order]
               for column, values, order in (_groups(table, c) for c in columns)}
    metric = "composite_f1" if comp is not None else (f"{heads[0].name}_acc" if heads else None)
    panels = [(column, [r["value"] for r in rows_], [np.nan if r[metric] is None else r[metric] for r in rows_],
               [r["images"] for r in rows_]) for column, rows_ in numbers.items() if metric and len(rows_) > 1]
    if panels:
        section.figure("breakdowns", figs.breakdown_figure(panels, label(metric)))
    for column, rows_ in numbers.items():
        sub = section.sub(f"breakdown-{slugify(column)}", f"By {column}")
        keys = list(rows_[0])
        sub.table([label(k) for k in keys], [[r[k] for k in keys] for r in rows_])
    return numbers, section


def _groups(table, column: str) -> tuple[str, np.ndarray, list[str]]:
    values = table[column].astype(str).where(table[column].notna(), "(blank)").to_numpy()
    order = sorted(set(values), key=lambda v: (not _numeric(v), float(v) if _numeric(v) else 0, v))
    return column, values, order


def group_scores(p: Predictions, comp, heads, inside: np.ndarray, value: str) -> dict:
    """One group's row: its images, the composite's accuracy and F1, each labelled head's accuracy and F1 (None
    where the group has no labelled image of it: a source that does not label the head)."""
    row = {"value": value, "images": int(inside.sum())}
    if comp is not None:
        keep = inside[comp[0]]
        t, q = comp[1][keep], comp[2][keep]
        row["composite_acc"] = float(np.mean(t == q)) if len(t) else None
        classes = int(max(t.max(), q.max())) + 1 if len(t) else 0
        row["composite_f1"] = macro_f1(t, q, classes, present_only=True) if len(t) else None
    for h in heads:
        mask = inside & (p.targets[h.name] != UNLABELLED)
        truth, decided = p.targets[h.name][mask], p.decided(h.name)[mask]
        row[f"{h.name}_acc"] = float(np.mean(truth == decided)) if mask.any() else None
        row[f"{h.name}_f1"] = macro_f1(truth, decided, h.num_classes) if mask.any() else None
    return row


def label(key: str) -> str:
    for suffix, words in (("_acc", " accuracy"), ("_f1", " F1")):
        if key.endswith(suffix):
            return key[: -len(suffix)].replace("_", " ") + words
    return key.replace("_", " ")


def _numeric(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False
