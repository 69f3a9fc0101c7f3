"""Tuned decisions: per-head class offsets, fitted on out-of-fold predictions, added to log-probabilities before argmax.

    multitask tune-decisions runs/quickstart/1          # refit RUN_DIR/decisions.json from RUN_DIR/oof.csv
    multitask train ...                                 # fits them at the end (train.decisions: auto)
    multitask predict --ckpt runs/quickstart/1 ...      # applies them (--decisions off: plain argmax)

A head's decision is argmax_c(log p_c + offset_c); the composite label is built from the heads' decisions by the
composite encoding, as predict does with plain argmax (with --joint: the argmax of log joint + the sum of the heads'
offsets of each composite class). Offsets only move decided labels: probabilities stay what the model said.

The search: coordinate ascent over a grid (GRID_MIN..GRID_MAX by GRID_STEP) for every class of every composite head
but the first (held at 0: adding one number to all of a head's classes decides nothing), ROUNDS rounds at most,
maximising the composite macro F1 (the competition metric) on oof.csv. With no composite in the table, each head is
fitted alone on its own macro F1. Ties keep the current value, so the search is deterministic.

The guard against fitting noise (cross-fitting): the OOF rows are split by person (the `group` column; else by row)
into PARTS parts; offsets fitted on the other parts decide each part's rows, so every row gets a decision from
offsets that never saw it. The held-out gain is the composite F1 of those decisions minus that of plain argmax, with a
95% paired bootstrap interval over people (stats.py). A head whose own held-out gain (its offsets alone) is not
positive is dropped and the rest refitted; the offsets are applied only when the lower end of the held-out gain's
interval is above 0. Otherwise decisions.json holds zero offsets, `applied: false` and the reason.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from rich.console import Console
from rich.table import Table

from ..heads import HeadSpec, composite_encode
from ..metrics.intervals import groups_of
from ..metrics.stats import group_draws, macro_f1, on_draws, percentile_interval
from ..metrics.table import load_table
from ..runs.run_dir import OOF
from ..utils.errors import UserError
from .apply import apply_offsets, log_probabilities
from .file import FORMAT, VERSION, named, write

GRID_MIN, GRID_MAX, GRID_STEP = -2.0, 2.0, 0.1
ROUNDS, PARTS, DRAWS, SEED = 3, 2, 1000, 0


# --------------------------------------------------------------------------------------------------- fitting
class Problem:
    """An OOF table as the search sees it: each tuned head's log-probabilities, the truth, and the objective (the
    composite macro F1 over the classes present, as predict and training score it; without a composite, the mean of
    the tuned heads' macro F1)."""

    def __init__(self, heads: Sequence[HeadSpec], composite: Sequence[HeadSpec], probs: Mapping[str, np.ndarray],
                 targets: Mapping[str, np.ndarray]):
        self.heads, self.composite = list(heads), list(composite)
        self.logp = {h.name: log_probabilities(probs[h.name]) for h in self.heads}
        self.argmax = {h.name: np.asarray(probs[h.name]).argmax(1) for h in self.heads}
        if self.composite:
            self.truth = {"composite": composite_encode(targets, self.composite)}
            self.classes = {"composite": math.prod(h.num_classes for h in self.composite)}
        else:
            self.truth = {h.name: np.asarray(targets[h.name]) for h in self.heads}
            self.classes = {h.name: h.num_classes for h in self.heads}

    def labels(self, offsets: Mapping[str, np.ndarray], rows: np.ndarray | slice = slice(None)) -> dict:
        return {h.name: apply_offsets(self.logp[h.name][rows], offsets[h.name]) if h.name in offsets
                else self.argmax[h.name][rows] for h in self.heads}

    def predictions(self, labels: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """What the objective scores: the composite code (or each head's labels)."""
        return {"composite": composite_encode(labels, self.composite)} if self.composite else dict(labels)

    def score(self, pred: Mapping[str, np.ndarray], rows: np.ndarray | slice = slice(None),
              pred_rows: np.ndarray | slice | None = None) -> float:
        """The objective of predictions `pred` (indexed by `pred_rows`, default `rows`) against the truth of `rows`."""
        at = rows if pred_rows is None else pred_rows
        values = [macro_f1(self.truth[k][rows], pred[k][at], self.classes[k], present_only=k == "composite")
                  for k in self.truth]
        return float(np.nanmean(values)) if not all(math.isnan(v) for v in values) else float("nan")

    def head_f1(self, head: HeadSpec, labels: np.ndarray, targets: np.ndarray) -> float:
        return round(macro_f1(np.asarray(targets), labels, head.num_classes), 6)


def grid() -> np.ndarray:
    values = np.round(np.arange(GRID_MIN, GRID_MAX + GRID_STEP / 2, GRID_STEP), 6)
    return values[np.lexsort((values, np.abs(values)))]   # 0 first, then outwards: ties keep the smaller offset


def search(problem: Problem, rows: np.ndarray, heads: Sequence[HeadSpec]) -> dict[str, np.ndarray]:
    """Coordinate ascent on `rows`: each free class offset in turn set to its best grid value, ROUNDS rounds at most."""
    offsets = {h.name: np.zeros(h.num_classes) for h in heads}
    labels = problem.labels(offsets, rows)
    best = problem.score(problem.predictions(labels), rows, slice(None))
    values = grid()
    for _ in range(ROUNDS):
        changed = False
        for head in heads:
            logp = problem.logp[head.name][rows]
            for j in range(1, head.num_classes):
                for value in values:
                    trial = offsets[head.name].copy()
                    trial[j] = value
                    candidate = {**labels, head.name: apply_offsets(logp, trial)}
                    score = problem.score(problem.predictions(candidate), rows, slice(None))
                    if score > best + 1e-12:
                        best, offsets[head.name], labels, changed = score, trial, candidate, True
        if not changed:
            break
    return offsets


def split_parts(groups: np.ndarray, parts: int, seed: int) -> list[np.ndarray]:
    """Row indices of `parts` parts, whole groups (people) in each, groups shuffled by `seed`."""
    unique, inverse = np.unique(groups, return_inverse=True)
    order = np.random.default_rng(seed).permutation(len(unique))
    part_of_group = np.empty(len(unique), dtype=np.int64)
    part_of_group[order] = np.arange(len(unique)) % parts
    return [np.flatnonzero(part_of_group[inverse] == k) for k in range(parts)]


def cross_fit(problem: Problem, parts: list[np.ndarray], heads: Sequence[HeadSpec]) -> list[dict[str, np.ndarray]]:
    """Per part: offsets fitted on every other part."""
    everything = np.concatenate(parts)
    return [search(problem, np.setdiff1d(everything, rows), heads) for rows in parts]


def held_out_labels(problem: Problem, parts: list[np.ndarray], fits: list[dict], names: set[str]) -> dict:
    """Every row decided by the offsets (of the heads in `names`) fitted without its part."""
    labels = {h.name: problem.argmax[h.name].copy() for h in problem.heads}
    for rows, offsets in zip(parts, fits):
        for name, values in problem.labels({k: v for k, v in offsets.items() if k in names}, rows).items():
            labels[name][rows] = values
    return labels


def fit_table(path: str | Path, *, parts: int = PARTS, draws: int = DRAWS, seed: int = SEED) -> dict:
    """The decisions document for a predictions table (oof.csv); see the module docstring."""
    table, heads, probs, targets, composite = load_table(path)
    if composite and all(h.name in targets for h in composite):
        tuned, objective = list(composite), "composite macro F1"
    else:
        composite = []
        tuned, objective = [h for h in heads if h.name in targets], "mean of the heads' macro F1"
    if not tuned:
        raise UserError(f"{path}: no true/<head> column; decisions are fitted on labelled out-of-fold predictions")
    problem = Problem(tuned, composite, probs, targets)
    labelled = np.flatnonzero(np.any([t >= 0 for t in problem.truth.values()], axis=0))   # each head skips its -1
    groups, units = groups_of(table)
    part_rows = [labelled[r] for r in split_parts(groups[labelled], parts, seed)]
    base = problem.predictions(problem.labels({}))
    doc = {"format": FORMAT, "version": VERSION, "objective": objective,
           "source": {"table": str(Path(path).resolve()), "rows": int(len(table)), "labelled": int(len(labelled))},
           "search": {"grid": [GRID_MIN, GRID_MAX], "step": GRID_STEP, "rounds": ROUNDS,
                      "fixed": "the first class of each head stays at 0"},
           "guard": {"parts": parts, "draws": draws, "seed": seed, "resampled": units,
                     "rule": "applied when the lower end of the 95% interval of the held-out gain is above 0"}}
    fitted = search(problem, labelled, tuned)
    doc["fitted"] = named(fitted, tuned)
    if len(np.unique(groups[labelled])) < 2 * parts:
        return finish(doc, problem, tuned, {}, base, None, f"too few {units} ({len(np.unique(groups[labelled]))}) "
                      f"to cross-fit in {parts} parts", targets)
    fits = cross_fit(problem, part_rows, tuned)
    everything = np.concatenate(part_rows)
    before = problem.score(base, everything)
    gains = {h.name: problem.score(problem.predictions(held_out_labels(problem, part_rows, fits, {h.name})),
                                   everything) - before for h in tuned}
    kept = [h for h in tuned if gains[h.name] > 0]
    doc["held_out_gain_per_head"] = {k: round(v, 6) for k, v in gains.items()}
    if not kept:
        return finish(doc, problem, tuned, {}, base, None, "no head's offsets raise the held-out F1", targets)
    if len(kept) < len(tuned):   # refit without the heads that did not help
        fitted = search(problem, labelled, kept)
        fits = cross_fit(problem, part_rows, kept)
    cross = problem.predictions(held_out_labels(problem, part_rows, fits, {h.name for h in kept}))
    samples = group_draws(groups[everything], draws=draws, seed=seed)
    diffs = on_draws(lambda idx: problem.score(cross, everything[idx]) - problem.score(base, everything[idx]),
                     samples)
    gain = problem.score(cross, everything) - before
    lo, hi = percentile_interval(diffs)
    held = {"before": before, "after": before + gain, "gain": gain, "ci95": [lo, hi]}
    if lo > 0:
        return finish(doc, problem, tuned, {h.name: fitted[h.name] for h in kept}, base, held, None, targets)
    return finish(doc, problem, tuned, {}, base, held, f"the held-out gain {gain:+.4f} (95% {lo:+.4f}..{hi:+.4f}) is "
                  f"not clearly above 0", targets, candidate={h.name: fitted[h.name] for h in kept})


def finish(doc: dict, problem: Problem, tuned, offsets: dict, base, held: dict | None, reason: str | None,
           targets, candidate: dict | None = None) -> dict:
    """Fill in what was applied and the OOF scores before / after (after: with the offsets kept, or the candidate
    ones that were refused, in-sample on every labelled row)."""
    shown = offsets or candidate or {}
    after = problem.predictions(problem.labels(shown))
    doc.update(applied=reason is None, reason=reason or "the held-out gain is above 0",
               offsets=named(offsets, tuned, zeros=True),
               oof={"before": problem.score(base), "after": problem.score(after)},
               held_out=None if held is None else {k: _round(v) for k, v in held.items()})
    doc["heads"] = {}
    for head in tuned:
        labels = problem.labels({head.name: shown[head.name]} if head.name in shown else {})[head.name]
        doc["heads"][head.name] = {"applied": head.name in offsets,
                                   "f1_before": problem.head_f1(head, problem.argmax[head.name], targets[head.name]),
                                   "f1_after": problem.head_f1(head, labels, targets[head.name])}
    doc["oof"] = {k: round(v, 6) for k, v in doc["oof"].items()}
    return doc


def _round(value):
    return [round(float(v), 6) for v in value] if isinstance(value, list) else round(float(value), 6)


# --------------------------------------------------------------------------------------------------- run dirs
def after_training(cfg, run_dir: Path) -> None:
    """train.decisions auto: fit decisions.json on the run's OOF once training is done (one line printed), as
    run_training does for every caller. A table that cannot be tuned (no labelled row, one person) is a note,
    not a failed training."""
    if cfg.train.decisions == "off" or not (Path(run_dir) / OOF).is_file():
        return
    try:
        fit_run(run_dir)
    except UserError as err:
        Console().print(f"decisions: not fitted ({err})", markup=False, highlight=False)


def fit_run(run_dir: str | Path, *, console=None, table: bool = False, **options) -> dict:
    """Fit RUN_DIR/decisions.json from RUN_DIR/oof.csv (a k-fold run dir: the folds' merged OOF), print one line
    (and with `table`, the per-head table); returns the document."""
    console = console or Console()
    run_dir = Path(run_dir)
    oof = run_dir / OOF
    if not oof.is_file():
        raise UserError(f"{run_dir}: no oof.csv (out-of-fold predictions are written when a validation improves); "
                        f"give a run dir of `multitask train`")
    doc = fit_table(oof, **options)
    doc["source"]["table"] = oof.name
    path = write(run_dir, doc)
    if table:
        print_table(doc, console)
    console.print(summary_line(doc) + f" -> {path}", markup=False, highlight=False, soft_wrap=True)
    return doc


def summary_line(doc: Mapping) -> str:
    """'decisions: composite F1 on OOF 0.412 -> 0.431 (held-out gain +0.011, 95% -0.002..+0.024): applied'."""
    what = "composite F1" if doc["objective"].startswith("composite") else "mean head F1"
    held = doc.get("held_out")
    gain = (f" (held-out gain {held['gain']:+.3f}, 95% {held['ci95'][0]:+.3f}..{held['ci95'][1]:+.3f})"
            if held else "")
    verdict = "applied" if doc["applied"] else f"not applied: {doc['reason']}"
    return f"decisions: {what} on OOF {doc['oof']['before']:.3f} -> {doc['oof']['after']:.3f}{gain}: {verdict}"


def print_table(doc: Mapping, console) -> None:
    """One row per class: its offset (the fitted one, for a head the guard left out) and the head's OOF F1."""
    table = Table(title="decision offsets (added to log-probabilities)", title_justify="left")
    for name, justify in (("head", "left"), ("class", "left"), ("offset", "right"), ("applied", "left"),
                          ("OOF macro F1", "right")):
        table.add_column(name, justify=justify, no_wrap=True)
    for head, info in doc["heads"].items():
        shown = doc["offsets"][head] if info["applied"] else (doc.get("fitted") or {}).get(head, {})
        f1 = f"{info['f1_before']:.4f} -> {info['f1_after']:.4f}"
        for i, (cls, value) in enumerate(shown.items()):
            first = i == 0
            table.add_row(head if first else "", cls, f"{value:+.2f}",
                          ("yes" if info["applied"] else "no") if first else "", f1 if first else "",
                          end_section=i == len(shown) - 1)
    console.print(table)
