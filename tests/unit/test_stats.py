"""Bootstrap intervals: the fast macro F1 equals sklearn's, intervals resample whole groups and narrow with data."""

import numpy as np
from sklearn.metrics import f1_score

from multitask.metrics.stats import MAX_DRAWS, group_draws, macro_f1, on_draws, percentile_interval


def test_macro_f1_matches_sklearn_including_absent_classes():
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 4, 200), rng.integers(0, 3, 200)     # class 3 is never predicted
    assert macro_f1(y, p, 5) == f1_score(y, p, labels=range(5), average="macro", zero_division=0)


def test_group_draws_keep_groups_whole():
    groups = np.repeat(np.arange(10), 7)
    for idx in group_draws(groups, draws=20, seed=1):
        drawn = groups[idx]
        assert len(idx) == 70 and all((drawn == g).sum() % 7 == 0 for g in np.unique(drawn))


def _pair(n_people, seed):
    """B fixes 10% of A's errors: a known, positive difference."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n_people * 7)
    a = np.where(rng.random(len(y)) < 0.6, y, rng.integers(0, 3, len(y)))
    b = np.where(rng.random(len(y)) < 0.25, y, a)
    return y, a, b, np.repeat(np.arange(n_people), 7)


def test_paired_interval_contains_the_observed_difference_and_narrows_with_more_people():
    widths = []
    for people in (40, 400):
        y, a, b, groups = _pair(people, seed=3)
        samples = group_draws(groups, draws=300, seed=0)
        f1_a = on_draws(lambda i, y=y, a=a: macro_f1(y[i], a[i], 3), samples)
        f1_b = on_draws(lambda i, y=y, b=b: macro_f1(y[i], b[i], 3), samples)
        diff = macro_f1(y, b, 3) - macro_f1(y, a, 3)
        lo, hi = percentile_interval(f1_b - f1_a)               # paired: both on the same samples
        assert lo <= diff <= hi and diff > 0
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2           # 10x the people: about sqrt(10) narrower
    lo, hi = percentile_interval(f1_a)
    assert lo < macro_f1(y, a, 3) < hi


def test_macro_f1_over_present_classes_matches_sklearns_default_macro():
    rng = np.random.default_rng(1)
    y, p = rng.integers(0, 18, 300), rng.integers(0, 12, 300)
    y[:5] = -1                                                   # unknown truth is left out
    keep = y >= 0
    assert macro_f1(y, p, 18, present_only=True) == f1_score(y[keep], p[keep], average="macro")


def test_draws_are_made_in_chunks_and_equal_the_unchunked_ones():
    groups = np.repeat(np.arange(37), 3).astype(str)
    whole = list(group_draws(groups, draws=50, seed=4, chunk=50))
    pieces = group_draws(groups, draws=50, seed=4, chunk=7)
    assert len(pieces) == 50 and all((x == y).all() for x, y in zip(whole, pieces, strict=True))
    assert all((x == y).all() for x, y in zip(pieces, pieces, strict=True))   # every pass: the same samples
    big = group_draws(np.arange(100_000).astype(str), draws=MAX_DRAWS, seed=0)
    assert big.chunk * 100_000 <= 2 ** 21   # memory per chunk bounded whatever the number of draws
