"""The synthetic data set: exact competition layout, determinism, label balance, atomic ensure_synthetic."""
from __future__ import annotations

import csv
import hashlib
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from multitask.config import SynthConfig
from multitask.data import synthetic_faces
from multitask.data.synthetic import ensure_synthetic, person_ids, write_synthetic
from multitask.data.synthetic_faces import STEMS, person_identity, render
from multitask.utils.errors import UserError

FOLDER = re.compile(r"^(\d{6}(?:-\d+)?)_(male|female)_([A-Za-z]+)_(\d+)$")
MASKS, GENDERS, AGES = ["wear", "incorrect", "not_wear"], ["male", "female"], ["<30", "30-59", ">=60"]


def _rows(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames), list(reader)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("synth") / "set"
    return root, write_synthetic(root, people=5, width=40, height=48, seed=3)


def test_summary_counts(small_set):
    root, summary = small_set
    assert summary == {"images": 35, "people": 5, "eval_images": 14, "eval_people": 2}
    assert len(list((root / "train" / "images").glob("*/*.jpg"))) == 35
    assert len(list((root / "eval" / "images").glob("*.jpg"))) == 14


def test_train_layout(small_set):
    root, _ = small_set
    columns, rows = _rows(root / "train" / "train.csv")
    assert columns == ["id", "gender", "race", "age", "path"]
    assert len(rows) == 5 and len({r["id"] for r in rows}) == 5
    for row in rows:
        match = FOLDER.match(row["path"])
        assert match, row["path"]
        assert match.groups() == (row["id"], row["gender"], row["race"], row["age"])
        assert row["race"] in synthetic_faces.RACES
        assert 18 <= int(row["age"]) <= 70
        folder = root / "train" / "images" / row["path"]
        assert sorted(p.name for p in folder.iterdir()) == sorted(f"{s}.jpg" for s in STEMS)
        image = cv2.imread(str(folder / "mask1.jpg"))
        assert image.shape == (48, 40, 3) and image.std() > 10   # a picture, not a flat fill
    assert set((root / "train" / "images").iterdir()) == {root / "train" / "images" / r["path"] for r in rows}


def test_eval_layout_and_answers(small_set):
    root, _ = small_set
    info_cols, info = _rows(root / "eval" / "info.csv")
    gt_cols, gt = _rows(root / "eval" / "gt.csv")
    assert info_cols == ["ImageID", "ans"] and gt_cols == ["ImageID", "ans", "mask", "gender", "age", "age_years",
                                                                         "group"]
    assert [r["ImageID"] for r in info] == [r["ImageID"] for r in gt]
    assert all(r["ans"] == "0" for r in info)
    assert {r["ImageID"] for r in gt} == {p.name for p in (root / "eval" / "images").iterdir()}
    for row in gt:
        assert re.fullmatch(r"[0-9a-f]{40}\.jpg", row["ImageID"])
        mask, gender, age = MASKS.index(row["mask"]), GENDERS.index(row["gender"]), AGES.index(row["age"])
        assert int(row["ans"]) == mask * 6 + gender * 3 + age
        years = int(row["age_years"])
        assert AGES[int(np.digitize(years, [30, 60]))] == row["age"]
    assert len({r["group"] for r in gt}) == 2 and all(sum(r["group"] == g["group"] for r in gt) == 7 for g in gt)
    # 7 photos per person: 5 worn, 1 incorrect, 1 without; rows shuffled, not person by person
    assert [r["mask"] for r in gt].count("wear") == 10 and [r["mask"] for r in gt].count("not_wear") == 2
    in_order = [hashlib.sha1(f"3:{i}:{s}".encode()).hexdigest() + ".jpg" for i in range(2) for s in STEMS]
    assert sorted(in_order) == sorted(r["ImageID"] for r in gt) and in_order != [r["ImageID"] for r in gt]


def test_same_seed_same_bytes_other_seed_differs(tmp_path, small_set):
    root, _ = small_set
    write_synthetic(tmp_path / "again", people=5, width=40, height=48, seed=3)
    write_synthetic(tmp_path / "other", people=5, width=40, height=48, seed=4)
    assert _files(tmp_path / "again") == _files(root)
    other = _files(tmp_path / "other")
    assert other.keys() != _files(root).keys() or other != _files(root)
    assert (tmp_path / "other" / "train" / "train.csv").read_bytes() != (root / "train" / "train.csv").read_bytes()


def test_larger_eval_set_extends_the_smaller_one(tmp_path, small_set):
    root, _ = small_set
    summary = write_synthetic(tmp_path / "big", people=5, width=40, height=48, seed=3, eval_people=4)
    assert summary == {"images": 35, "people": 5, "eval_images": 28, "eval_people": 4}
    big = _files(tmp_path / "big")
    small = _files(root)
    # same training set, and the two eval people of the default set are among the four, byte for byte
    assert {k: v for k, v in big.items() if k.startswith("train/")} == {k: v for k, v in small.items()
                                                                        if k.startswith("train/")}
    small_eval = {k: v for k, v in small.items() if k.startswith("eval/images/")}
    assert len(small_eval) == 14 and all(big[k] == v for k, v in small_eval.items())
    _, gt = _rows(tmp_path / "big" / "eval" / "gt.csv")
    assert len(gt) == 28 and len({r["ImageID"] for r in gt}) == 28
    with pytest.raises(UserError, match="eval people"):
        write_synthetic(tmp_path / "none", people=5, width=40, height=48, seed=3, eval_people=0)


def test_label_balance_like_the_competition():
    people = [person_identity(0, 0, i)[0] for i in range(300)]
    female = np.mean([p["female"] for p in people])
    ages = np.array([p["age"] for p in people])
    bands = np.bincount(np.digitize(ages, [30, 60]), minlength=3) / len(ages)
    assert abs(female - 0.61) < 0.1, female
    assert abs(bands[0] - 0.47) < 0.08 and abs(bands[1] - 0.45) < 0.08 and 0.03 < bands[2] < 0.14, bands
    assert ages.min() >= 18 and ages.max() <= 70 and (ages == 60).sum() > 0
    # train and eval people come from separate streams
    assert person_identity(0, 1, 0)[0]["spots"].tolist() != people[0]["spots"].tolist()


def test_ids_six_digits_some_suffixed():
    ids = person_ids(0, 200)
    assert len(set(ids)) == 200
    assert all(re.fullmatch(r"\d{6}(-1)?", i) for i in ids)
    assert sum("-" in i for i in ids) == 4


@pytest.mark.parametrize("size", [(32, 32), (96, 128), (384, 512)])
def test_render_sizes(size):
    width, height = size
    person, rng = person_identity(1, 0, 0)
    worn = render(person, "wear", np.random.default_rng(0), width=width, height=height)
    bare = render(person, "not_wear", np.random.default_rng(0), width=width, height=height)
    assert worn.shape == (height, width, 3) and worn.dtype == np.uint8
    # same pose and light (same generator state): the difference is the mask, on the lower middle of the picture
    diff = np.abs(worn.astype(int) - bare.astype(int)).sum(2)
    assert diff.mean() > 3
    middle = diff[height // 3: 3 * height // 4, width // 4: 3 * width // 4].mean()
    assert middle > 2 * diff[: height // 6].mean()


def test_ensure_synthetic_writes_once(tmp_path):
    root = tmp_path / "data" / "synthetic"
    cfg = SynthConfig(people=2, width=32, height=32, seed=0)
    assert ensure_synthetic(root, cfg) is True
    before = _files(root)
    assert len(before) == 2 * 7 + 2 * 7 + 3
    assert ensure_synthetic(root, cfg) is False
    assert _files(root) == before
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["synthetic"]   # no temp folder left


def test_ensure_synthetic_into_existing_folder_and_incomplete_set(tmp_path):
    root = tmp_path / "root"
    (root / ".cache").mkdir(parents=True)
    assert ensure_synthetic(root, SynthConfig(people=1, width=32, height=32)) is True
    assert (root / "train" / "train.csv").is_file() and (root / ".cache").is_dir()
    broken = tmp_path / "broken"
    (broken / "train" / "images").mkdir(parents=True)
    with pytest.raises(UserError, match="train.csv"):
        ensure_synthetic(broken, SynthConfig(people=1, width=32, height=32))


def test_bad_input_is_a_user_error(tmp_path, small_set):
    root, _ = small_set
    with pytest.raises(UserError, match="already exists"):
        write_synthetic(root, people=1, width=32, height=32, seed=0)
    with pytest.raises(UserError, match="--people"):
        write_synthetic(tmp_path / "x", people=0, width=32, height=32, seed=0)


