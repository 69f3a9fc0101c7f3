"""Honest comparisons: every macro F1 with a 95% bootstrap interval, and paired differences on the same images.

    multitask compare runs/quickstart/1 runs/quickstart_single18/1                  # run dirs: their oof.csv
    multitask compare out/a/predictions.csv out/b/predictions.csv --names a,b    # predict outputs (with --gt)

Resampling: whole people when the tables have a `group` column (oof.csv, predict with a gt that names the person),
else the `--group-by` columns, else single images (7 photos of one person err together, so per-image intervals
come out too narrow). A difference B - A is bootstrapped paired: both are scored on the same resampled images, so
what the two runs share (which images are hard) cancels and only their disagreement decides the interval.
Writes OUT/compare.json, compare.md and compare.png (the differences with their intervals).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from rich.console import Console
from rich.table import Table

from ..metrics.figures import to_png
from ..metrics.intervals import Pair, Scores, groups_of, pairs_of, resampled, summary, take_rows
from ..metrics.stats import describe, group_draws
from ..metrics.table import TRUE, load_table
from ..utils.errors import UserError
from ..utils.io import write_bytes, write_json, write_text


# --------------------------------------------------------------------------------------------------- comparing
@dataclass
class Comparison:
    scores: dict[str, Scores]
    differences: dict[str, dict[str, tuple[float, float, float]]]   # "B - A" -> metric -> (diff, lo, hi)
    images: int
    note: str
    draws: int
    units: str          # what was resampled: "people", "images" or "groups of ..."
    groups: int


def load_item(item: str | Path) -> tuple[pd.DataFrame, dict[str, Pair]]:
    """(table, scored pairs) of a run dir (its oof.csv; a k-fold parent's merged one) or a predictions / oof CSV."""
    path = Path(item)
    if path.is_dir():
        if not (path / "oof.csv").is_file():
            raise UserError(f"{path}: no oof.csv in this run dir (it is written when a validation improves)")
        path = path / "oof.csv"
    elif not path.is_file():
        raise UserError(f"{path}: no such run dir or CSV file")
    table, heads, probs, targets, _ = load_table(path)
    if table["image_id"].duplicated().any():
        raise UserError(f"{path}: image {table['image_id'][table['image_id'].duplicated()].iloc[0]!r} appears twice")
    return table, pairs_of(table, heads, probs, targets)


def compare(items: list, *, names: list[str] | None = None, draws: int = 1000, seed: int = 0,
            group_by: list[str] | None = None) -> Comparison:
    if len(items) < 2:
        raise UserError("compare: give at least two run dirs or prediction tables")
    if names is None:
        same = _given_twice(items)
        if same:
            raise UserError(f"compare: {same} is given twice; a table compared with itself differs by 0 everywhere; "
                            f"give two different runs or tables (or --names a,b to compare it with itself anyway)")
    names = names or default_names(items)
    if len(names) != len(items) or len(set(names)) != len(names):
        raise UserError(f"--names: need {len(items)} distinct names, got {names}")
    order, pairs, first, note = align([load_item(i) for i in items], names)
    metrics = list(pairs[0])
    groups, units = groups_of(first, group_by)
    n_groups = len(np.unique(groups))
    samples = group_draws(groups, draws=draws, seed=seed)   # one resampling: every score and difference is paired
    values = [{k: resampled(p[k], samples) for k in metrics} for p in pairs]
    scores = {name: Scores(values={k: summary(*v[k]) for k in metrics}, draws=draws, units=units, groups=n_groups)
              for name, v in zip(names, values)}
    base = values[0]
    differences = {f"{name} - {names[0]}": {k: summary(v[k][0] - base[k][0], v[k][1] - base[k][1]) for k in metrics}
                   for name, v in zip(names[1:], values[1:])}
    return Comparison(scores=scores, differences=differences, images=len(order), note=note, draws=draws,
                      units=units, groups=n_groups)


def align(loaded: list[tuple[pd.DataFrame, dict[str, Pair]]], names: list[str]):
    """The images every table holds, in the first table's order: (image ids, pairs per table restricted to them and
    to the metrics all tables have, the first table's rows, a note when some images were left out)."""
    tables = [t for t, _ in loaded]
    shared = set(tables[0]["image_id"])
    for t in tables[1:]:
        shared &= set(t["image_id"])
    if not shared:
        raise UserError(f"{names[0]} and the others share no image: compare predictions of the same images (oof.csv "
                        f"of runs with the same seed, data.n_folds and data.fold; or predict on one data set)")
    order = [i for i in tables[0]["image_id"] if i in shared]
    note = ""
    if any(len(t) != len(order) for t in tables):
        sizes = ", ".join(f"{n} {len(t)}" for n, t in zip(names, tables))
        note = f"scored on the {len(order)} images every table holds (of {sizes})"
    rows = [pd.Index(t["image_id"]).get_indexer(order) for t in tables]
    pairs = [{k: take_rows(v, r) for k, v in p.items()} for (_, p), r in zip(loaded, rows)]
    first = tables[0].iloc[rows[0]].reset_index(drop=True)
    metrics = [k for k in pairs[0] if all(k in p for p in pairs)]
    dropped = [f"{k} (no truth or columns in {', '.join(n for n, p in zip(names, pairs) if k not in p)})"
               for k in dict.fromkeys(k for p in pairs for k in p) if k not in metrics]
    if dropped:   # said, not silently dropped: a head missing from one table is not compared at all
        note = "; ".join(filter(None, [note, "left out " + ", ".join(dropped)]))
    pairs = [{k: p[k] for k in metrics} for p in pairs]
    if not metrics:
        raise UserError("compare: the tables share no head with truth (true/<head> columns); predict with --gt")
    for k in metrics:   # one class count per metric: the composite's comes from the largest label seen
        classes = max(p[k][2] for p in pairs)
        pairs = [{**p, k: (p[k][0], p[k][1], classes, p[k][3])} for p in pairs]
    for name, p in zip(names[1:], pairs[1:]):
        for k in metrics:
            truth_a, truth_b = pairs[0][k][0], p[k][0]
            differ = (truth_a != truth_b) & (truth_a >= 0) & (truth_b >= 0)
            if differ.any():
                raise UserError(f"{names[0]} and {name} disagree on the truth ({TRUE}{k}) of {int(differ.sum())} "
                                f"images, e.g. {order[int(np.argmax(differ))]!r}; compare runs on the same labels")
    return order, pairs, first, note


def _given_twice(items: list) -> str | None:
    """The first item named twice (the same file or folder, however it is written), or None."""
    seen = set()
    for item in items:
        key = Path(item).resolve()
        if key in seen:
            return str(item)
        seen.add(key)
    return None


def default_names(items: list) -> list[str]:
    """Run dirs by their last two folders (quickstart/1), files by folder/name; made unique if they collide."""
    names = []
    for item in items:
        path = Path(item)
        parts = path.parts[-2:] if path.is_dir() or path.suffix.lower() != ".csv" else (path.parent.name, path.stem)
        names.append("/".join(p for p in parts if p))
    if len(set(names)) < len(names):
        names = [str(Path(i)) for i in items]
    return names


# --------------------------------------------------------------------------------------------------- output
def verdict_lines(c: Comparison) -> list[str]:
    return [f"{pair.replace(' - ', ' − ')}  {metric} F1: {describe(*v, signed=True)}"
            for pair, values in c.differences.items() for metric, v in values.items()]


def markdown(c: Comparison) -> str:
    metrics = list(next(iter(c.scores.values())).values)
    lines = [f"{c.images} images, {c.groups} {c.units} resampled, {c.draws} draws"
             + (f"; {c.note}" if c.note else ""), "",
             "| run | " + " | ".join(f"{m} F1 (95% CI)" for m in metrics) + " |", "|---|" + "---|" * len(metrics)]
    for name, s in c.scores.items():
        lines.append(f"| {name} | " + " | ".join(describe(*s.values[m]) for m in metrics) + " |")
    lines += ["", "| paired difference | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    for pair, values in c.differences.items():
        lines.append(f"| {pair} | " + " | ".join(describe(*values[m], signed=True) for m in metrics) + " |")
    return "\n".join(lines) + "\n"


def plot(c: Comparison, path: Path) -> Path:
    """Forest plot: each difference with its 95% interval; green above 0, red below, grey when it spans 0."""

    rows = [(f"{pair}: {metric}", *v) for pair, values in c.differences.items() for metric, v in values.items()]
    fig = Figure(figsize=(7, 1.0 + 0.35 * len(rows)), dpi=100)
    ax = fig.add_subplot()
    for y, (_label, diff, lo, hi) in enumerate(rows[::-1]):
        color = "tab:green" if lo > 0 else "tab:red" if hi < 0 else "tab:gray"
        ax.plot([lo, hi], [y, y], color=color, lw=2)
        ax.plot([diff], [y], "o", color=color)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows[::-1]], fontsize=8)
    ax.set_xlabel(f"difference in macro F1\n(95% interval, {c.draws} draws over {c.groups} {c.units})")
    ax.set_title("paired differences")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    write_bytes(path, to_png(fig))
    return path


def run_compare(items: list, *, out: str | Path = "compare", names: list[str] | None = None, draws: int = 1000,
                seed: int = 0, group_by: list[str] | None = None, console=None) -> Comparison:

    console = console or Console()
    c = compare(items, names=names, draws=draws, seed=seed, group_by=group_by)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    metrics = list(next(iter(c.scores.values())).values)
    table = Table(title=f"macro F1 with 95% intervals: {c.images} images, {c.groups} {c.units} resampled",
                  title_justify="left")
    table.add_column("run")
    for m in metrics:
        table.add_column(m, justify="right")
    for name, s in c.scores.items():
        table.add_row(name, *[describe(*s.values[m]) for m in metrics])
    console.print(table)
    if c.note:
        console.print(c.note, highlight=False)
    for line in verdict_lines(c):
        console.print(line, highlight=False, soft_wrap=True)
    write_text(out / "compare.md", markdown(c))
    write_json(out / "compare.json", {
        "images": c.images, "note": c.note, "resampled": c.units, "groups": c.groups, "draws": c.draws,
        "scores": {n: {m: list(v) for m, v in s.values.items()} for n, s in c.scores.items()},
        "differences": {p: {m: {"difference": d, "lo": lo, "hi": hi, "significant": bool(lo > 0 or hi < 0)}
                            for m, (d, lo, hi) in values.items()} for p, values in c.differences.items()}})
    plot(c, out / "compare.png")
    console.print(f"-> {out}/compare.md, compare.json, compare.png", highlight=False)
    return c
