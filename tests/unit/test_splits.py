"""Grouped stratified folds: people never straddle folds, strata spread evenly, the seed decides."""
import numpy as np
import pytest

from multitask.data.splits import assign_folds, split_indices
from multitask.utils.errors import UserError


def _people(n_people=120, photos=7, seed=0):
    rng = np.random.default_rng(seed)
    person_strata = rng.choice(6, size=n_people, p=[0.3, 0.3, 0.05, 0.15, 0.15, 0.05])
    groups = np.repeat([f"{i:06d}" for i in range(n_people)], photos)
    strata = np.repeat(person_strata, photos)
    return groups, strata


def test_no_person_in_two_folds_and_every_row_assigned():
    groups, strata = _people()
    folds = assign_folds(groups, strata, n_folds=5, seed=1)
    assert folds.shape == groups.shape and set(folds) == set(range(5))
    for group in np.unique(groups):
        assert len(set(folds[groups == group])) == 1, group


def test_strata_are_roughly_balanced():
    groups, strata = _people()
    folds = assign_folds(groups, strata, n_folds=5, seed=3)
    overall = np.bincount(strata, minlength=6) / len(strata)
    for fold in range(5):
        share = np.bincount(strata[folds == fold], minlength=6) / (folds == fold).sum()
        assert np.abs(share - overall).max() < 0.06, (fold, share, overall)
    sizes = np.bincount(folds)
    assert sizes.max() - sizes.min() <= 2 * 7  # within two people


def test_deterministic_by_seed_and_unlabelled_stratum_allowed():
    groups, strata = _people()
    strata[:70] = -1
    a = assign_folds(groups, strata, n_folds=4, seed=7)
    b = assign_folds(list(groups), list(strata), n_folds=4, seed=7)
    c = assign_folds(groups, strata, n_folds=4, seed=8)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_split_indices_partition_the_rows():
    groups, strata = _people(n_people=20)
    folds = assign_folds(groups, strata, n_folds=4, seed=0)
    train, val = split_indices(folds, 2)
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(len(folds)))
    assert (folds[val] == 2).all() and (folds[train] != 2).all()
    assert not set(groups[train]) & set(groups[val])
    with pytest.raises(UserError, match=r"data.fold: 4 not in 0..3"):
        split_indices(folds, 4)


def test_fewer_people_than_folds_is_a_user_error():
    with pytest.raises(UserError, match="5 folds but only 3 people"):
        assign_folds(["a", "a", "b", "c"], [0, 0, 1, 1], n_folds=5, seed=0)
