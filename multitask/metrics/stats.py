"""Uncertainty of scores: bootstrap intervals that resample people (or images), and paired differences.

    samples = group_draws(person_ids, draws=1000, seed=0)
    a = on_draws(lambda idx: macro_f1(y[idx], pred_a[idx], 3), samples)     # the same samples for every statistic
    lo, hi = percentile_interval(a)
    lo, hi = percentile_interval(on_draws(lambda idx: macro_f1(y[idx], pred_b[idx], 3), samples) - a)  # B - A

Why people: the 7 photos of one person share face, age and gender, so their errors move together. Resampling
images as if independent makes an interval look 2-3x narrower than it is; resampling whole people does not.
When the person is unknown, any grouping that keeps each person inside one group (even merging several people)
gives an interval that is, if anything, wider than the per-person one.
"""
from __future__ import annotations

from typing import Callable, Iterable, Iterator

import numpy as np

from ..utils.errors import UserError

Stat = Callable[[np.ndarray], float]


def confusion_counts(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) counts, rows = truth, over the labelled rows (y_true >= 0)."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    keep = y_true >= 0
    counts = np.bincount(y_true[keep] * num_classes + y_pred[keep], minlength=num_classes ** 2)
    return counts.reshape(num_classes, num_classes)


def class_scores(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Per class precision, recall, F1 and support from confusion counts; 0 where a ratio has nothing to divide
    (sklearn's precision_recall_fscore_support with zero_division=0)."""
    tp = np.diag(counts).astype(np.float64)
    predicted, support = counts.sum(0), counts.sum(1)

    def ratio(top, bottom):
        return np.divide(top, bottom, out=np.zeros_like(tp), where=bottom > 0)
    return {"precision": ratio(tp, predicted), "recall": ratio(tp, support),
            "f1": ratio(2 * tp, predicted + support), "support": support.astype(np.int64)}


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int, *, present_only: bool = False) -> float:
    """Macro F1 over range(num_classes), a class absent from both truth and prediction scoring 0 (sklearn's
    f1_score(labels=range(K), average='macro', zero_division=0)); a confusion count, fast enough for 1000 draws.
    The one macro F1 of the package: training, predict, the report, compare and the decisions search use it.

    present_only: the mean over the classes present in truth or prediction only (sklearn's plain
    f1_score(average='macro'), the competition's composite metric)."""
    counts = confusion_counts(y_true, y_pred, num_classes)
    f1 = class_scores(counts)["f1"]
    if present_only:
        present = (counts.sum(0) + counts.sum(1)) > 0
        return float(f1[present].mean()) if present.any() else float("nan")
    return float(f1.mean())


def head_scores(y_true, y_pred, num_classes: int) -> dict:
    """Accuracy, macro F1 over range(num_classes), and per-class precision/recall/f1/support (lists), of the rows
    whose truth is known (y_true >= 0); with no such row, acc and f1 are NaN and the supports 0."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    keep = y_true >= 0
    counts = confusion_counts(y_true, y_pred, num_classes)
    per = class_scores(counts)
    n = int(keep.sum())
    return {"acc": float(np.mean(y_true[keep] == y_pred[keep])) if n else float("nan"),
            "f1": float(per["f1"].mean()) if n else float("nan"), "n": n,
            "precision": per["precision"].tolist(), "recall": per["recall"].tolist(),
            "f1_per_class": per["f1"].tolist(), "support": per["support"].tolist(), "confusion": counts}


MAX_DRAWS = 100_000          # past ~10 000 an interval's third decimal no longer moves; this bounds the time
CHUNK_PICKS = 2 ** 20         # group picks drawn at once (8 MB): memory stays flat whatever the number of draws


def check_draws(draws: int, option: str = "--draws") -> int:
    """`draws` when it is a bootstrap size worth running (10..MAX_DRAWS), else one UserError line."""
    if not 10 <= draws <= MAX_DRAWS:
        raise UserError(f"{option}: need 10 to {MAX_DRAWS} bootstrap draws, got {draws} (1000-10000 is plenty)")
    return draws


class Draws:
    """`draws` bootstrap samples of row indices, made while they are iterated: groups drawn with replacement, each
    bringing all its rows. The picks come in chunks of at most CHUNK_PICKS numbers, and every iteration starts
    again from `seed`: each statistic sees the very same samples (a paired difference), memory stays bounded, and
    the samples do not depend on the chunk size (a generator's stream is the same drawn whole or in pieces)."""

    def __init__(self, groups: np.ndarray, *, draws: int, seed: int, chunk: int | None = None):
        if not 1 <= draws <= MAX_DRAWS:
            raise UserError(f"bootstrap: need 1 to {MAX_DRAWS} draws, got {draws}")
        _, inverse = np.unique(np.asarray(groups), return_inverse=True)
        self.members = np.split(np.argsort(inverse, kind="stable"), np.cumsum(np.bincount(inverse))[:-1])
        self.draws, self.seed = draws, seed
        self.chunk = chunk or max(1, CHUNK_PICKS // max(1, len(self.members)))

    def __len__(self) -> int:
        return self.draws

    def __iter__(self) -> Iterator[np.ndarray]:
        rng = np.random.default_rng(self.seed)
        for start in range(0, self.draws, self.chunk):
            picks = rng.integers(0, len(self.members), size=(min(self.chunk, self.draws - start), len(self.members)))
            for row in picks:
                yield np.concatenate([self.members[g] for g in row])


def group_draws(groups: np.ndarray, *, draws: int, seed: int, chunk: int | None = None) -> Draws:
    """`draws` bootstrap samples of row indices (`Draws`: made lazily, the same on every pass)."""
    return Draws(groups, draws=draws, seed=seed, chunk=chunk)


def on_draws(stat: Stat, samples: Iterable[np.ndarray]) -> np.ndarray:
    """stat(indices) on every bootstrap sample: computed once, then summarised (percentile_interval) or
    subtracted from another statistic's values on the same samples (a paired difference)."""
    return np.fromiter((stat(idx) for idx in samples), dtype=np.float64)


def percentile_interval(values, level: float = 0.95) -> tuple[float, float]:
    tail = (1 - level) / 2 * 100
    return float(np.nanpercentile(values, tail)), float(np.nanpercentile(values, 100 - tail))


def describe(observed: float, lo: float, hi: float, *, signed: bool = False) -> str:
    """'0.512 (0.48-0.54)'; signed differences say whether the interval excludes 0."""
    if not signed:
        return f"{observed:.3f} ({lo:.3f}-{hi:.3f})"
    verdict = "significant" if lo > 0 or hi < 0 else "not significant"
    return f"{observed:+.3f} (95% {lo:+.3f}…{hi:+.3f}), {verdict}"
