"""The competition reader on a layout built here: junk files, mixed extensions, csv drift, label fixes, eval order."""
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from helpers import REPO

from multitask.data.competition import read_competition, read_eval, read_label_fixes
from multitask.utils.errors import UserError

SHIPPED_FIXES = REPO / "configs" / "label_fixes" / "mask_competition.csv"
STEMS = ["mask1", "mask2", "mask3", "mask4", "mask5", "incorrect_mask", "normal"]


def _image(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ext = path.suffix.lower()
    ok, data = cv2.imencode(".png" if ext == ".png" else ".jpg", np.full((8, 6, 3), value, np.uint8))
    assert ok
    path.write_bytes(data.tobytes())


def _person(images: Path, folder: str, exts=None) -> None:
    exts = exts or ["jpg"] * len(STEMS)
    for i, (stem, ext) in enumerate(zip(STEMS, exts)):
        _image(images / folder / f"{stem}.{ext}", 20 * i)


def _layout(root: Path, csv_rows=None) -> Path:
    images = root / "train" / "images"
    _person(images, "000001_female_Asian_45", exts=["jpg", "jpeg", "png", "JPG", "jpg", "jpg", "png"])
    _person(images, "001498-1_male_Asian_25")
    _person(images, "000020_male_Asian_60")
    (images / "000001_female_Asian_45" / "._mask1.jpg").write_bytes(b"\x00\x05\x16\x07 junk")  # macOS fork
    (images / "000001_female_Asian_45" / ".DS_Store").write_bytes(b"junk")
    (images / "000001_female_Asian_45" / "notes.txt").write_text("not an image")
    _image(images / "000020_male_Asian_60" / "mask9.jpg", 1)  # unknown stem
    _image(images / ".thumbs" / "x.jpg", 1)                  # hidden folder
    (images / ".DS_Store").write_bytes(b"junk")
    rows = csv_rows or [
        ("000001", "female", "Asian", "44", "000001_female_Asian_45"),  # age drifted: the folder wins
        ("001498-1", "male", "Asian", "25", "001498-1_male_Asian_25"),
        ("000020", "male", "Asian", "60", "000020_male_Asian_60"),
    ]
    pd.DataFrame(rows, columns=["id", "gender", "race", "age", "path"]).to_csv(root / "train" / "train.csv",
                                                                               index=False)
    return root


@pytest.fixture()
def root(tmp_path):
    return _layout(tmp_path / "data")


def test_reads_one_row_per_image_and_skips_junk(root):
    data = read_competition(root)
    frame = data.frame
    assert list(frame.columns) == ["path", "id", "group", "gender", "race", "age", "mask", "stem", "folder"]
    assert len(frame) == 21
    assert sorted(frame["id"].unique()) == ["000001", "000020", "001498-1"]
    assert (frame["group"] == frame["id"]).all()
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in frame["path"])
    # deterministic order: by (id, stem)
    assert list(zip(frame["id"], frame["stem"])) == sorted(zip(frame["id"], frame["stem"]))
    first = frame[frame["id"] == "000001"]
    assert {Path(p).suffix for p in first["path"]} == {".jpg", ".jpeg", ".png", ".JPG"}
    assert first["mask"].value_counts().to_dict() == {"wear": 5, "incorrect": 1, "not_wear": 1}
    assert first.set_index("stem").loc["normal", "mask"] == "not_wear"
    assert first.set_index("stem").loc["incorrect_mask", "mask"] == "incorrect"
    assert frame["age"].dtype.kind == "i"
    assert data.skipped_hidden == 4   # ._mask1.jpg, two .DS_Store, the .thumbs folder
    assert data.skipped_other == 2    # notes.txt, mask9.jpg
    assert "21 images of 3 people" in data.summary()


def test_folder_is_the_truth_and_disagreements_are_reported(root):
    data = read_competition(root)
    assert (data.frame.loc[data.frame["id"] == "000001", "age"] == 45).all()
    assert len(data.disagreements) == 1
    assert "age '44'" in data.disagreements[0] and "000001_female_Asian_45" in data.disagreements[0]


def test_accepts_the_train_folder_as_root(root):
    assert len(read_competition(root / "train").frame) == 21


def test_shipped_label_fixes_parse_and_apply(root):
    fixes = read_label_fixes(SHIPPED_FIXES)
    assert len(fixes) == 11
    genders = {f.id: f.value for f in fixes if f.field == "gender"}
    assert genders == {**{f"00{n}": "male" for n in range(6359, 6365)}, "001498-1": "female", "004432": "female"}
    assert sorted(f.id for f in fixes if f.value == "swap_incorrect_normal") == ["000020", "004418", "005227"]

    data = read_competition(root, label_fixes=SHIPPED_FIXES)
    frame = data.frame.set_index(["id", "stem"])
    assert data.fixes_applied == 2
    assert len(data.unused_fixes) == 9 and any("006359" in note for note in data.unused_fixes)
    assert (frame.loc["001498-1", "gender"] == "female").all()
    assert frame.loc[("000020", "incorrect_mask"), "mask"] == "not_wear"
    assert frame.loc[("000020", "normal"), "mask"] == "incorrect"
    assert frame.loc[("000020", "mask1"), "mask"] == "wear"
    assert (frame.loc["000001", "gender"] == "female").all()  # untouched


def test_per_image_and_age_fixes(root, tmp_path):
    fixes = tmp_path / "fixes.csv"
    fixes.write_text("id,field,value,image\n000001,age,61,\n000001,mask,incorrect,mask3.jpg\n999999,race,X,\n")
    data = read_competition(root, label_fixes=fixes)
    frame = data.frame.set_index(["id", "stem"])
    assert data.fixes_applied == 2 and data.unused_fixes == ["label fix line 4: id 999999 not in the data"]
    assert (frame.loc["000001", "age"] == 61).all()
    assert frame.loc[("000001", "mask3"), "mask"] == "incorrect"
    assert frame.loc[("000001", "mask2"), "mask"] == "wear"


@pytest.mark.parametrize("text, needle", [
    ("id,field,value\n000001,colour,red\n", "unknown field 'colour'"),
    ("id,field,value\n000001,gender,m\n", "gender value 'm'"),
    ("id,field,value\n000001,age,old\n", "age value 'old'"),
    ("id,field,value\n000001,mask,none\n", "mask value 'none'"),
    ("id,value\n000001,male\n", "missing column(s) field"),
])
def test_bad_label_fixes_name_the_line(tmp_path, text, needle):
    path = tmp_path / "fixes.csv"
    path.write_text(text)
    with pytest.raises(UserError, match="fixes.csv") as err:
        read_label_fixes(path)
    assert needle in str(err.value)


@pytest.mark.parametrize("folder, needle", [
    ("000002_female_Asian", "does not parse"),
    ("000002_unknown_Asian_30", "unknown gender 'unknown'"),
    ("000002_male_Asian_thirty", "age 'thirty'"),
    ("000002_male_Asian_-3", "age '-3'"),
])
def test_bad_folder_names_are_user_errors(root, folder, needle):
    _image(root / "train" / "images" / folder / "mask1.jpg", 1)
    with pytest.raises(UserError, match=folder) as err:
        read_competition(root)
    assert needle in str(err.value)


def test_missing_pieces_are_user_errors(root, tmp_path):
    with pytest.raises(UserError, match="data root not found"):
        read_competition(tmp_path / "nowhere")
    (root / "train" / "train.csv").write_text("id,gender,age\n")
    with pytest.raises(UserError, match=r"missing column\(s\) race, path"):
        read_competition(root)
    (root / "train" / "train.csv").unlink()
    with pytest.raises(UserError, match="train.csv not found"):
        read_competition(root)
    empty = tmp_path / "empty"
    (empty / "train" / "images" / "000001_male_Asian_20").mkdir(parents=True)
    with pytest.raises(UserError, match="no training images"):
        read_competition(empty)


def _eval_layout(root: Path, ids: list[str]) -> None:
    for i, image_id in enumerate(ids):
        _image(root / "eval" / "images" / image_id, i)
    pd.DataFrame({"ImageID": ids, "ans": 0}).to_csv(root / "eval" / "info.csv", index=False)


def test_read_eval_keeps_info_order(tmp_path):
    ids = ["c1.jpg", "a2.jpg", "b3.png"]
    _eval_layout(tmp_path, ids)
    for where in (tmp_path, tmp_path / "eval"):
        frame = read_eval(where)
        assert list(frame.columns) == ["ImageID", "path"]
        assert list(frame["ImageID"]) == ids
        assert [Path(p).name for p in frame["path"]] == ids and all(Path(p).is_absolute() for p in frame["path"])


def test_read_eval_errors(tmp_path):
    _eval_layout(tmp_path, ["a.jpg", "b.jpg", "c.jpg"])
    (tmp_path / "eval" / "images" / "b.jpg").unlink()
    (tmp_path / "eval" / "images" / "c.jpg").unlink()
    with pytest.raises(UserError, match=r"'b.jpg' not found .*\(2 of 3 missing\)"):
        read_eval(tmp_path)
    (tmp_path / "eval" / "info.csv").write_text("ImageID,ans\n")
    with pytest.raises(UserError, match="no rows"):
        read_eval(tmp_path)
    (tmp_path / "eval" / "info.csv").unlink()
    with pytest.raises(UserError, match="info.csv not found"):
        read_eval(tmp_path)


def test_one_id_in_two_folders_with_different_labels(root):
    _person(root / "train" / "images", "000001_male_Asian_45")
    with pytest.raises(UserError, match="person id 000001 is in 2 folders with different labels: "
                                        "000001_female_Asian_45, 000001_male_Asian_45; fix or remove all but one"):
        read_competition(root)
    data = read_competition(root, on_conflict="warn")
    assert len(data.frame) == 21 and "000001_male_Asian_45" not in set(data.frame["folder"])
    assert data.conflicts == {"000001": ["000001_female_Asian_45", "000001_male_Asian_45"]}
    assert ("1 person id(s) in folders with different labels, kept the first (data.on_conflict=warn): "
            "000001_female_Asian_45 (left out 000001_male_Asian_45)") in data.summary()


def test_person_folders_without_seven_images_are_named(root):
    assert "without exactly" not in read_competition(root).summary()
    (root / "train" / "images" / "000020_male_Asian_60" / "mask5.jpg").unlink()
    _image(root / "train" / "images" / "001498-1_male_Asian_25" / "mask1.png", 3)   # a second mask1
    data = read_competition(root)
    assert data.odd_folders == {"000020_male_Asian_60": 6, "001498-1_male_Asian_25": 8}
    assert ("2 person folder(s) without exactly 7 images: 000020_male_Asian_60 (6), 001498-1_male_Asian_25 (8)"
            in data.summary())
