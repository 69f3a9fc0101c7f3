"""The generic CSV source: partial labels, names and indices, groups, metadata, and errors that point at the row."""
from pathlib import Path

import cv2
import numpy as np
import pytest

from multitask.config import default_heads
from multitask.data.manifest import read_manifest
from multitask.heads import label_array, resolve_heads
from multitask.utils.errors import UserError


@pytest.fixture()
def heads():
    return resolve_heads(default_heads())


@pytest.fixture()
def folder(tmp_path):
    for name in ("a.jpg", "b.png", "sub/c.jpg"):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), np.zeros((4, 4, 3), np.uint8))
    return tmp_path


def _write(folder: Path, text: str) -> Path:
    path = folder / "manifest.csv"
    path.write_text(text)
    return path


def test_partial_labels_names_and_indices(folder, heads):
    absolute = folder / "b.png"
    csv = _write(folder, "path,mask,gender,age,group,source,score\n"
                         "a.jpg,wear,female,,p1,ours,0.5\n"
                         f"{absolute},2,-1,>=60,p2,other,\n"
                         "sub/c.jpg,Incorrect,1,1,,ours,2\n")
    frame = read_manifest(csv, heads)
    assert list(frame.columns) == ["path", "group", "mask", "gender", "age", "source", "score"]
    assert list(frame["path"]) == [str(folder / "a.jpg"), str(absolute), str(folder / "sub" / "c.jpg")]
    assert list(frame["mask"]) == ["wear", "not_wear", "incorrect"]
    assert list(frame["gender"]) == ["female", None, "female"]
    assert list(frame["age"]) == [None, ">=60", "30-59"]    # numeric age column = class index, not years
    assert list(frame["group"]) == ["p1", "p2", "row2"]      # blank group = its own group
    assert list(frame["source"]) == ["ours", "other", "ours"]
    assert frame["score"].iloc[0] == 0.5 and np.isnan(frame["score"].iloc[1])
    # what the trainer does next: class names -> indices, -1 for unlabelled
    assert list(label_array(heads["gender"], frame, heads)) == [1, -1, 1]
    assert list(label_array(heads["age"], frame, heads)) == [-1, 2, 1]


def test_absent_head_column_means_unlabelled(folder, heads):
    frame = read_manifest(_write(folder, "path,mask\na.jpg,wear\nb.png,\n"), heads)
    assert "gender" not in frame.columns and "age" not in frame.columns
    assert list(frame["group"]) == ["row0", "row1"]
    assert list(label_array(heads["gender"], frame, heads)) == [-1, -1]
    assert list(label_array(heads["mask"], frame, heads)) == [0, -1]


@pytest.mark.parametrize("row, needle", [
    ("a.jpg,helmet", "line 3, column mask: unknown class 'helmet' for head mask; expected one of wear, incorrect"),
    ("a.jpg,3", "unknown class '3'"),
])
def test_unknown_class_names_row_column_and_choices(folder, heads, row, needle):
    csv = _write(folder, f"path,mask\nb.png,wear\n{row}\n")
    with pytest.raises(UserError, match="manifest.csv") as err:
        read_manifest(csv, heads)
    assert needle in str(err.value)


def test_age_in_years_is_rejected_not_binned(folder, heads):
    with pytest.raises(UserError, match=r"line 2, column age: unknown class '45'.*index 0..2"):
        read_manifest(_write(folder, "path,age\na.jpg,45\n"), heads)


@pytest.mark.parametrize("value", ["nan", "abc", "\u0664\u0665", "\u00b25", "inf", "-5", "1e300", "101", "1_0"])
def test_bad_years_name_their_own_row_and_value(folder, heads, value):
    """Another row's valid years around the bad one: the message names the bad row and its value, not the first."""
    csv = _write(folder, f"path,age_years\na.jpg,51\nb.png,{value}\nsub/c.jpg,30\n")
    with pytest.raises(UserError) as err:
        read_manifest(csv, heads)
    message = str(err.value)
    assert message.startswith(f"{csv} line 3, column age_years: ") and value in message and "51" not in message
    hint = "is not a number of years" if value in ("nan", "abc", "\u0664\u0665", "\u00b25", "1_0", "inf") else \
        "is outside heads.age.years_range [0, 100]"
    assert hint in message, message


def test_years_inside_the_range_are_numbers_and_blank_is_unknown(folder, heads):
    frame = read_manifest(_write(folder, "path,age_years\na.jpg,51\nb.png,\nsub/c.jpg,100.0\n"), heads)
    assert frame["age_years"].tolist()[::2] == [51.0, 100.0] and np.isnan(frame["age_years"][1])
    assert label_array(heads["age"], frame, heads).tolist() == [1, -1, 2]


def test_missing_image_and_missing_path_column(folder, heads):
    with pytest.raises(UserError, match=r"manifest.csv line 3: image not found: gone.jpg"):
        read_manifest(_write(folder, "path,mask\na.jpg,wear\ngone.jpg,wear\n"), heads)
    with pytest.raises(UserError, match="missing column 'path'"):
        read_manifest(_write(folder, "file,mask\na.jpg,wear\n"), heads)
    with pytest.raises(UserError, match="manifest not found"):
        read_manifest(folder / "nope.csv", heads)
