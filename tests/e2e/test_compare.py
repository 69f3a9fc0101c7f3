"""`multitask compare`: paired bootstrap differences on crafted predictions with a known difference."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import REPO, error_line
from sklearn.metrics import f1_score

from multitask.analysis.compare import compare, load_item
from multitask.cli import main
from multitask.config import Config
from multitask.heads import resolve_heads
from multitask.metrics.intervals import score_intervals
from multitask.metrics.stats import MAX_DRAWS
from multitask.metrics.table import build_table
from multitask.utils.errors import UserError
from multitask.utils.io import write_csv

ROOT = REPO
HEADS = resolve_heads(Config().heads)
COMPOSITE = [HEADS[n] for n in ("mask", "gender", "age")]


def crafted(people: int, seed: int, tmp: Path) -> tuple[Path, Path]:
    """A: right 60% of the time per head; B: A with a quarter of A's errors fixed. 7 images per person."""
    rng = np.random.default_rng(seed)
    n = people * 7
    truth = {h.name: rng.integers(0, h.num_classes, n) for h in COMPOSITE}
    paths = []
    for name, fix in (("a", 0.0), ("b", 0.25)):
        rng_run = np.random.default_rng(seed + 1)   # the same A under both, B = A + fixes
        probs = {}
        for h in COMPOSITE:
            pred = np.where(rng_run.random(n) < 0.6, truth[h.name], rng_run.integers(0, h.num_classes, n))
            pred = np.where(np.random.default_rng([seed, 2]).random(n) < fix, truth[h.name], pred)
            probs[h.name] = np.eye(h.num_classes)[pred] * 0.9 + 0.1 / h.num_classes
        table = build_table(ids=[f"img{i}" for i in range(n)], paths=[f"p{i}.jpg" for i in range(n)],
                            heads=COMPOSITE, probs=probs, targets=truth, composite=COMPOSITE,
                            meta=pd.DataFrame({"group": [f"person{i // 7}" for i in range(n)]}))
        (tmp / name).mkdir(parents=True, exist_ok=True)
        paths.append(write_csv(table, tmp / name / "oof.csv"))
    return paths[0], paths[1]


def test_paired_interval_contains_the_known_difference_and_narrows_with_more_images(tmp_path):
    widths = []
    for people in (40, 400):
        a, b = crafted(people, seed=5, tmp=tmp_path / str(people))
        c = compare([a.parent, b], names=["A", "B"], draws=300)      # a run dir and a CSV file
        ta, tb = pd.read_csv(a), pd.read_csv(b)
        truth = ta["true/composite"]
        known = f1_score(truth, tb["pred/composite"], average="macro") - f1_score(truth, ta["pred/composite"],
                                                                               average="macro")
        diff, lo, hi = c.differences["B - A"]["composite"]
        assert diff == pytest.approx(known) and lo <= diff <= hi and diff > 0
        for head in ("mask", "gender", "age"):
            d, lo_h, hi_h = c.differences["B - A"][head]
            y, labels = ta[f"true/{head}"], range(HEADS[head].num_classes)
            assert d == pytest.approx(f1_score(y, tb[f"pred/{head}"], average="macro", labels=labels)
                                      - f1_score(y, ta[f"pred/{head}"], average="macro", labels=labels))
            assert lo_h <= d <= hi_h
        assert c.scores["A"].units == "people" and c.scores["A"].groups == people
        score, lo_a, hi_a = c.scores["A"].values["composite"]
        assert lo_a <= score <= hi_a and score == pytest.approx(f1_score(truth, ta["pred/composite"], average="macro"))
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2          # 10x the people: about sqrt(10) narrower
    assert lo > 0                             # with 400 people the known gain is significant


def test_people_intervals_are_wider_than_image_intervals_on_person_correlated_errors(tmp_path):
    """Errors shared by a person's 7 photos: resampling images as if independent understates the spread."""
    rng = np.random.default_rng(0)
    people, n = 60, 420
    person = np.repeat(np.arange(people), 7)
    truth = {h.name: np.repeat(rng.integers(0, h.num_classes, people), 7) for h in COMPOSITE}
    wrong = np.repeat(rng.random(people) < 0.4, 7)          # a person is either right or wrong on every photo
    probs = {h.name: np.eye(h.num_classes)[np.where(wrong, (truth[h.name] + 1) % h.num_classes, truth[h.name])]
             for h in COMPOSITE}
    table = build_table(ids=[f"i{i}" for i in range(n)], paths=[""] * n, heads=COMPOSITE, probs=probs, targets=truth,
                        composite=COMPOSITE, meta=pd.DataFrame({"group": person.astype(str)}))
    path = write_csv(table, tmp_path / "p.csv")
    by_people = score_intervals(*load_item(path), draws=300)
    write_csv(table.drop(columns=["group"]), tmp_path / "q.csv")
    by_images = score_intervals(*load_item(tmp_path / "q.csv"), draws=300)
    assert by_people.units == "people" and by_images.units == "images"
    width = lambda s: s.values["mask"][2] - s.values["mask"][1]  # noqa: E731
    assert width(by_people) > 1.5 * width(by_images)


@pytest.mark.slow
def test_cli_writes_table_json_and_plot_and_the_script_wraps_it(tmp_path, capsys):
    a, b = crafted(30, seed=1, tmp=tmp_path)
    assert main(["compare", str(a.parent), str(b.parent), "--names", "base,better", "--draws", "200",
                 "--out", str(tmp_path / "cmp")]) == 0
    printed = capsys.readouterr().out
    assert "better − base  composite F1: +" in printed and "(95% " in printed
    saved = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    d = saved["differences"]["better - base"]["composite"]
    assert d["lo"] <= d["difference"] <= d["hi"] and saved["resampled"] == "people" and saved["groups"] == 30
    assert (tmp_path / "cmp" / "compare.png").stat().st_size > 1000
    assert "| better - base |" in (tmp_path / "cmp" / "compare.md").read_text()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "compare_predictions.py"), str(a), str(b),
                           "--draws", "50", "--out", str(tmp_path / "cmp2")], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "cmp2" / "compare.json").is_file()


def test_partial_overlap_is_said_and_bad_inputs_are_one_line(tmp_path, capsys):
    a, b = crafted(10, seed=2, tmp=tmp_path)
    table = pd.read_csv(b)
    write_csv(table.iloc[7:], tmp_path / "fewer.csv")
    c = compare([a, tmp_path / "fewer.csv"], draws=50)
    assert c.images == 63 and "63 images every table holds" in c.note
    flipped = table.copy()
    flipped.loc[3, "true/mask"] = (flipped.loc[3, "true/mask"] + 1) % 3
    write_csv(flipped, tmp_path / "flipped.csv")
    with pytest.raises(UserError, match=r"disagree on the truth \(true/mask\) of 1 images"):
        compare([a, tmp_path / "flipped.csv"], draws=50)
    assert main(["compare", str(a), str(tmp_path / "nope.csv")]) == 2
    assert "no such run dir or CSV file" in capsys.readouterr().err
    assert main(["compare", str(a)]) == 2


def test_a_table_missing_a_class_column_is_refused_not_scored(tmp_path, capsys):
    """A dropped prob/<head>/<class> column leaves class indices beyond the head's columns: the shared table check
    refuses it in compare as in report (it would otherwise crash the F1 count or score a smaller head)."""
    a, b = crafted(10, seed=4, tmp=tmp_path)
    table = pd.read_csv(b)
    table.drop(columns=["prob/age/>=60"]).to_csv(tmp_path / "dropped.csv", index=False)
    assert main(["compare", str(a), str(tmp_path / "dropped.csv")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds class 2, but the table has only 2 prob/age/ columns" in err


def test_a_mask_only_manifest_scores_the_mask_head_alone(tmp_path):
    """A predictions table of mask photos (gender, age and so the composite never labelled) scores mask only: no
    NaN interval and no 0.0 for heads it has no truth for (scores.json and compare read the same pairs)."""
    rng = np.random.default_rng(3)
    n = 90
    mask = rng.integers(0, 3, n)
    truth = {"mask": mask, "gender": np.full(n, -1), "age": np.full(n, -1)}
    probs = {h.name: np.eye(h.num_classes)[np.where(rng.random(n) < 0.7, np.maximum(truth[h.name], 0), 0)]
             for h in COMPOSITE}
    groups = pd.DataFrame({"group": (np.arange(n) // 3).astype(str)})
    table = build_table(ids=[f"i{i}" for i in range(n)], paths=[""] * n, heads=COMPOSITE, probs=probs,
                        targets=truth, composite=COMPOSITE, meta=groups)
    path = write_csv(table, tmp_path / "mask_only.csv")
    scores = score_intervals(*load_item(path), draws=100)
    assert set(scores.values) == {"mask"}
    f1, lo, hi = scores.values["mask"]
    assert f1 == pytest.approx(f1_score(mask, table["pred/mask"], average="macro", labels=range(3)))
    assert 0 < lo <= f1 <= hi < 1
    c = compare([path, path], names=["a", "b"], draws=50)
    assert set(c.differences["b - a"]) == {"mask"} and c.differences["b - a"]["mask"][0] == 0


def test_huge_draws_are_refused_in_one_line_before_any_table_is_read(tmp_path, capsys):
    a, b = crafted(5, seed=1, tmp=tmp_path)
    assert main(["compare", str(a), str(b), "--draws", "100000000", "--out", str(tmp_path / "cmp")]) == 2
    message = error_line(capsys)
    assert "--draws" in message and str(MAX_DRAWS) in message and "100000000" in message
    assert not (tmp_path / "cmp").exists()
    assert main(["tune-decisions", str(a.parent), "--draws", "100000000"]) == 2
    assert "--draws" in error_line(capsys)


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
