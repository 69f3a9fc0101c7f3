"""One photo, one side of the split: the same file listed twice (by two rows of a manifest, by two sources over one
folder, by an unlabelled folder over a labelled one) is found by the file itself, not by how its path is spelt.

    keep, note = repeated_rows(frame, labels, unlabelled=is_images_source)   # rows_and_folds, once folds are known

Why: validation is what a person tunes on. A photo that is a validation image in one row and a training image in
another scores the model on what it learnt, and nothing in the metrics shows it; an unlabelled copy of a validation
image reaches training through the teacher's probabilities. So:
- a photo in two folds (or in a fold and a training-only source) is refused: its rows disagree on who the person is;
- an unlabelled copy of a labelled photo is dropped: it would leak a validation image, and adds nothing to a training
  one (the labelled row gets the teacher's probabilities too);
- an exact repeat (the same photo, labels and fold) is dropped, kept once: it would count twice in every epoch and
  every score;
- the same photo on the same side with other labels (two sources labelling other heads of it) is kept.

A file is known by its device and inode (after following links, as the face-box and teacher caches key a file by its
resolved path): a symlink, `a/../b.jpg` and a hard link are the one photo they point at.
"""
from __future__ import annotations

import os

import numpy as np
import pandas as pd

from ..utils.errors import UserError


def file_identity(path: str) -> str:
    """The file behind `path`: device and inode after following links (its resolved path when it cannot be read)."""
    try:
        st = os.stat(path)
    except OSError:
        return os.path.realpath(path)
    return f"{st.st_dev}:{st.st_ino}"


def repeated_rows(frame: pd.DataFrame, labels: dict[str, np.ndarray], *,
                  unlabelled: np.ndarray) -> tuple[np.ndarray, str | None]:
    """(N,) rows to keep and the one line saying how many were dropped (None: none); UserError when a photo's rows
    sit in two folds. `frame` has path, source, group and fold; `labels` {name: (N,)} are the training labels."""
    ids = pd.Series([file_identity(p) for p in frame["path"]])
    copy = unlabelled & ids.isin(set(ids[~unlabelled])).to_numpy()
    _refuse_split(frame, ids, ~copy)
    values = {name: np.nan_to_num(np.asarray(v, dtype=np.float64), nan=-1.0) for name, v in labels.items()}
    table = pd.DataFrame({"id": ids, "fold": frame["fold"].to_numpy(), **values})
    exact = (table.duplicated() & ~copy).to_numpy()
    drop = copy | exact
    if not drop.any():
        return ~drop, None
    example = frame["path"].iloc[int(np.argmax(drop))]
    return ~drop, (f"data: dropped {int(drop.sum()):,} repeated image row(s): {int(exact.sum()):,} exact repeat(s) "
                   f"(the same photo, labels and fold), {int(copy.sum()):,} unlabelled copy(ies) of labelled photos; "
                   f"e.g. {example}")


def _refuse_split(frame: pd.DataFrame, ids: pd.Series, rows: np.ndarray) -> None:
    """One line when a photo (among `rows`) is in two folds: a validation image in one row, a training one in
    another."""
    table = pd.DataFrame({"id": ids[rows].to_numpy(), "fold": frame["fold"].to_numpy()[rows],
                          "row": np.flatnonzero(rows)})
    folds = table.groupby("id", sort=False)["fold"].nunique()
    crossing = folds[folds > 1]
    if crossing.empty:
        return
    first = table[table["id"] == crossing.index[0]].drop_duplicates("fold").iloc[:2]
    where = " and ".join(_where(frame.iloc[r]) for r in first["row"])
    raise UserError(f"data: {len(crossing):,} image(s) are listed in more than one fold, a validation image in one "
                    f"row and a training image in another, e.g. {frame['path'].iloc[first['row'].iloc[0]]} in "
                    f"{where}; list each photo once (or under one group), or drop the source that repeats it")


def _where(row: pd.Series) -> str:
    fold = f"fold {row['fold']}" if row["fold"] >= 0 else "training only"
    return f"source {row['source']} (group {row['group']}, {fold})"
