"""Round 3: files and options from others get one line naming the file (exit 2), and no option takes the machine down.

The bootstrap is bounded (drawn lazily in chunks, capped), compare refuses tables that are not what they claim,
crafted exports and checkpoints are checked by their one reader before anything is written.
"""
import numpy as np
import pandas as pd
import pytest
from helpers import error_line
from test_compare import crafted

from multitask.analysis.compare import compare
from multitask.cli import main
from multitask.metrics.stats import MAX_DRAWS, group_draws
from multitask.utils.io import write_csv


# --------------------------------------------------------------------------------------------------- bootstrap
def test_huge_draws_are_refused_in_one_line_before_any_table_is_read(tmp_path, capsys):
    a, b = crafted(5, seed=1, tmp=tmp_path)
    assert main(["compare", str(a), str(b), "--draws", "100000000", "--out", str(tmp_path / "cmp")]) == 2
    message = error_line(capsys)
    assert "--draws" in message and str(MAX_DRAWS) in message and "100000000" in message
    assert not (tmp_path / "cmp").exists()
    assert main(["tune-decisions", str(a.parent), "--draws", "100000000"]) == 2
    assert "--draws" in error_line(capsys)


def test_draws_are_made_in_chunks_and_equal_the_unchunked_ones():
    groups = np.repeat(np.arange(37), 3).astype(str)
    whole = list(group_draws(groups, draws=50, seed=4, chunk=50))
    pieces = group_draws(groups, draws=50, seed=4, chunk=7)
    assert len(pieces) == 50 and all((x == y).all() for x, y in zip(whole, pieces, strict=True))
    assert all((x == y).all() for x, y in zip(pieces, pieces, strict=True))   # every pass: the same samples
    big = group_draws(np.arange(100_000).astype(str), draws=MAX_DRAWS, seed=0)
    assert big.chunk * 100_000 <= 2 ** 21   # memory per chunk bounded whatever the number of draws


# --------------------------------------------------------------------------------------------------- compare input
def _broken(tmp_path, column, value, row=3):
    a, b = crafted(10, seed=2, tmp=tmp_path)
    table = pd.read_csv(b)
    table[column] = table[column].astype(object)
    table.loc[row, column] = value
    return a, write_csv(table, tmp_path / "broken.csv")


@pytest.mark.parametrize("column, value, expected", [
    ("true/gender", -5, "holds -5 (image 'img3'); expected a class index 0 to 1, or -1"),
    ("true/mask", 1.5, "holds 1.5"),
    ("prob/mask/wear", float("nan"), "prob/mask/wear holds nan"),
    ("prob/mask/wear", float("inf"), "holds inf"),
    ("prob/age/<30", 7.0, "holds 7.0 (image 'img3'); a probability is a number from 0 to 1"),
    ("prob/age/<30", -0.2, "holds -0.2"),
])
def test_compare_refuses_labels_that_are_no_class_and_probabilities_that_are_none(tmp_path, capsys, column, value,
                                                                                 expected):
    a, broken = _broken(tmp_path, column, value)
    assert main(["compare", str(a), str(broken), "--draws", "20", "--out", str(tmp_path / "cmp")]) == 2
    message = error_line(capsys)
    assert str(broken) in message and column in message and expected in message, message


def test_compare_refuses_an_unknown_group_by_column_even_beside_a_group_column(tmp_path, capsys):
    a, b = crafted(5, seed=3, tmp=tmp_path)
    assert main(["compare", str(a), str(b), "--group-by", "gendr", "--draws", "20", "--out", str(tmp_path)]) == 2
    assert "--group-by: no column 'gendr'" in error_line(capsys)


def test_compare_says_which_head_it_left_out(tmp_path):
    a, b = crafted(10, seed=5, tmp=tmp_path)
    table = pd.read_csv(b)
    unlabelled = write_csv(table.drop(columns=["true/gender"]), tmp_path / "no_gender_truth.csv")
    c = compare([a, unlabelled], names=["a", "b"], draws=20)
    assert "gender" not in c.differences["b - a"] and "left out gender (no truth or columns in b)" in c.note
    composite = ("prob/gender/", "pred/gender", "true/gender", "composite/heads", "pred/composite", "true/composite")
    fewer = write_csv(table.drop(columns=[c for c in table.columns if c.startswith(composite)]),
                      tmp_path / "no_gender.csv")
    c = compare([a, fewer], names=["a", "b"], draws=20)
    assert set(c.differences["b - a"]) == {"mask", "age"}
    assert "left out composite (no truth or columns in b), gender (no truth or columns in b)" in c.note
