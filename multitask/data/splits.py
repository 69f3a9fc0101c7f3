"""Person-grouped, stratified k-fold: every photo of a person lands in one fold.

    folds = assign_folds(frame["group"], strata, n_folds=5, seed=42)   # strata: gender*3 + age class per row
    train_idx, val_idx = split_indices(folds, fold=0)

Why grouped: a person's seven photos share face, background and lighting; splitting them across train and validation
lets the model recognise the person instead of the label, and validation scores stop predicting the leaderboard.
Why stratified on gender x age (not mask): every person has all three mask states, so mask balances itself, while the
>=60 class is rare and a fold without it would make its F1 meaningless.
"""
from __future__ import annotations

import warnings

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from ..utils.errors import UserError


def assign_folds(groups, strata, *, n_folds: int, seed: int) -> np.ndarray:
    """Fold id (0..n_folds-1) per row; rows of one group share a fold; strata spread evenly (-1 is just a stratum)."""
    groups = np.asarray(groups)
    strata = np.asarray(strata, dtype=np.int64)
    if len(groups) != len(strata):
        raise ValueError(f"assign_folds: {len(groups)} groups but {len(strata)} strata")
    if n_folds < 2:
        raise UserError(f"data.n_folds: {n_folds}; need at least 2 folds for a validation split")
    n_groups = len(np.unique(groups))
    if n_groups < n_folds:
        raise UserError(f"data.n_folds: {n_folds} folds but only {n_groups} people (groups) in the data; "
                        f"use data.n_folds <= {n_groups} or add data")
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    folds = np.full(len(groups), -1, dtype=np.int64)
    with warnings.catch_warnings():
        # "the least populated class has fewer members than n_splits": expected for rare strata on small sets
        warnings.filterwarnings("ignore", category=UserWarning, module="sklearn")
        for fold, (_, val_idx) in enumerate(splitter.split(np.zeros(len(groups)), strata, groups)):
            folds[val_idx] = fold
    assert (folds >= 0).all(), "every row must get a fold"
    return folds


def split_indices(folds, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, validation rows) for one fold."""
    folds = np.asarray(folds)
    n_folds = int(folds.max()) + 1 if len(folds) else 0
    if not 0 <= fold < n_folds:
        raise UserError(f"data.fold: {fold} not in 0..{n_folds - 1}")
    return np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
