"""Synthetic faces in the mask competition's layout: an offline quickstart and test data.

    multitask synth --out data/synthetic --people 150 --size 96x128 --seed 0

writes
    train/train.csv                   id,gender,race,age,path
    train/images/<path>/              mask1..mask5.jpg (wear), incorrect_mask.jpg, normal.jpg (not wear)
    eval/images/<sha1>.jpg            other people, shuffled
    eval/info.csv                     ImageID,ans (ans 0: the submission template)
    eval/gt.csv                       ImageID,ans,mask,gender,age,age_years,group (the answers:
                                      ans = mask*6+gender*3+age; group = the person, so score intervals resample
                                      people)

The faces are drawn by synthetic_faces.py; a seed gives byte-identical files.
"""
from __future__ import annotations

import hashlib
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import Config
from ..heads import composite_encode, resolve_heads
from ..utils.errors import UserError
from ..utils.io import write_bytes, write_csv
from .synthetic_faces import STEM_MASK, STEMS, person_images


# ----------------------------------------------------------------------------------------------------- the data set
def person_ids(seed: int, count: int) -> list[str]:
    """6-digit ids like the competition's, ~2% with a '-1' suffix."""
    rng = np.random.default_rng([seed, 3])
    numbers = np.sort(rng.choice(np.arange(1, min(999_999, max(1000, 8 * count)) + 1), count, replace=False))
    suffixed = set(rng.choice(count, int(round(0.02 * count)), replace=False).tolist())
    return [f"{n:06d}" + ("-1" if i in suffixed else "") for i, n in enumerate(numbers)]


def _write_rows(path: Path, header: list[str], rows: list[list]) -> None:
    write_csv(pd.DataFrame(rows, columns=header), path)


def _classes(person: dict, state: str, heads: dict) -> tuple[int, int, int]:
    """Class indices in the default heads' order (gender classes are male, female)."""
    return (heads["mask"].classes.index(state), int(person["female"]),
            int(np.digitize(person["age"], heads["age"].eval_bins)))


def write_synthetic(out: str | Path, *, people: int, width: int, height: int, seed: int,
                    eval_people: int | None = None) -> dict:
    """Write the competition layout at `out`; returns {images, people, eval_images, eval_people}.

    Eval people are drawn apart from the training people; the first N of them are the same whatever `eval_people` is,
    so a larger eval set extends a smaller one rather than replacing it.
    """
    out = Path(out)
    if people < 1:
        raise UserError(f"synth: --people must be at least 1, got {people}")
    if width < 8 or height < 8:
        raise UserError(f"synth: size must be at least 8x8, got {width}x{height}")
    for sub in ("train", "eval"):
        if (out / sub).exists():
            raise UserError(f"synth: {out / sub} already exists; choose an empty --out folder or delete it first")
    heads = resolve_heads(Config().heads)   # names filled in
    composite = [heads[n] for n in ("mask", "gender", "age")]
    if eval_people is None:
        eval_people = max(2, math.ceil(people / 4))
    if eval_people < 1:
        raise UserError(f"synth: eval people must be at least 1, got {eval_people}")

    (out / "eval" / "images").mkdir(parents=True)
    eval_rows = []
    for index in range(eval_people):
        person, images = person_images(seed, 1, index, width=width, height=height)
        for stem, data in images.items():
            image_id = hashlib.sha1(f"{seed}:{index}:{stem}".encode()).hexdigest() + ".jpg"
            write_bytes(out / "eval" / "images" / image_id, data)
            mask, gender, age = _classes(person, STEM_MASK[stem], heads)
            ans = int(composite_encode({"mask": mask, "gender": gender, "age": age}, composite))
            eval_rows.append([image_id, ans, STEM_MASK[stem], heads["gender"].classes[gender],
                              heads["age"].classes[age], person["age"], f"eval{index:04d}"])
    order = np.random.default_rng([seed, 2]).permutation(len(eval_rows))
    eval_rows = [eval_rows[i] for i in order]
    _write_rows(out / "eval" / "info.csv", ["ImageID", "ans"], [[r[0], 0] for r in eval_rows])
    _write_rows(out / "eval" / "gt.csv", ["ImageID", "ans", "mask", "gender", "age", "age_years", "group"], eval_rows)

    train_rows = []
    for index, person_id in enumerate(person_ids(seed, people)):
        person, images = person_images(seed, 0, index, width=width, height=height)
        gender = "female" if person["female"] else "male"
        folder = f"{person_id}_{gender}_{person['race']}_{person['age']}"
        (out / "train" / "images" / folder).mkdir(parents=True)
        for stem, data in images.items():
            write_bytes(out / "train" / "images" / folder / f"{stem}.jpg", data)
        train_rows.append([person_id, gender, person["race"], person["age"], folder])
    # written last: its presence means the set is complete (ensure_synthetic relies on it)
    _write_rows(out / "train" / "train.csv", ["id", "gender", "race", "age", "path"], train_rows)
    return {"images": people * len(STEMS), "people": people, "eval_images": len(eval_rows), "eval_people": eval_people}


def ensure_synthetic(root: str | Path, synth_cfg) -> bool:
    """Write the synthetic set at `root` unless root/train/train.csv exists; True if it wrote.

    Built in a temporary sibling folder and moved into place, so a crash never leaves a half set that looks complete;
    two processes racing (DDP ranks) both finish with one complete set.
    """
    root = Path(root)
    if (root / "train" / "train.csv").is_file():
        return False
    for sub in ("train", "eval"):
        if (root / sub).exists():
            raise UserError(f"data.root: {root / sub} exists but {root}/train/train.csv does not (an incomplete set?); "
                            f"delete {root / sub} to have it synthesized again")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        write_synthetic(tmp, people=synth_cfg.people, width=synth_cfg.width, height=synth_cfg.height,
                        seed=synth_cfg.seed, eval_people=synth_cfg.eval_people)
        try:
            if root.exists():   # e.g. holds a cache folder: move our two folders in, train (with its csv) last
                os.rename(tmp / "eval", root / "eval")
                os.rename(tmp / "train", root / "train")
            else:
                os.rename(tmp, root)
        except OSError:
            if (root / "train" / "train.csv").is_file():   # another process finished first
                return False
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return True
