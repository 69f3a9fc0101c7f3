"""The report's label issues (cleanlab on out-of-fold probabilities): flipped labels found with their true class, heads
it cannot judge skipped with a reason, and the suggested fixes loading back through data.label_fixes."""
import json

import cv2
import numpy as np
import pandas as pd
import pytest

from multitask.analysis.report.build import build_report
from multitask.analysis.report.figures import Thumbnails
from multitask.analysis.report.inputs import load_predictions
from multitask.analysis.report.label_issues import CSV, analyse_label_issues
from multitask.data.competition import MASK_BY_STEM, read_competition, read_label_fixes
from multitask.heads import HeadSpec
from multitask.metrics.table import build_table
from multitask.utils.io import write_csv

STEMS = list(MASK_BY_STEM)
MASK = HeadSpec(classes=["wear", "incorrect", "not_wear"], name="mask")
GENDER = HeadSpec(classes=["male", "female"], name="gender")
AGE = HeadSpec(classes=["<30", "30-59", ">=60"], name="age", bins=[30, 60], eval_bins=[30, 60])


def confident(rng, truth: np.ndarray, k: int) -> np.ndarray:
    """Probabilities that put most mass on the true class (p(true) mostly above 0.9), as a good model's would."""
    logits = rng.normal(size=(len(truth), k)) + 5.0 * np.eye(k)[truth]
    p = np.exp(logits)
    return p / p.sum(1, keepdims=True)


def oof_table(folder, heads, truth, given, rng, *, group=None, stem=None):
    """An oof.csv as training writes it: probabilities from the true classes, labels as given."""
    n = len(next(iter(truth.values())))
    probs = {h.name: confident(rng, truth[h.name], h.num_classes) for h in heads}
    meta = pd.DataFrame({"stem": stem if stem is not None else [STEMS[i % 7] for i in range(n)]})
    table = build_table(ids=[f"img{i:04d}" for i in range(n)], paths=[f"missing/img{i:04d}.png" for i in range(n)],
                        heads=heads, probs=probs, targets=given, meta=meta)
    table.insert(2, "group", group if group is not None else [f"{i // 7:06d}" for i in range(n)])
    write_csv(table, folder / "oof.csv")
    return table


def test_finds_the_flipped_labels_and_their_true_class(tmp_path):
    rng = np.random.default_rng(7)
    n, flips = 300, 20
    truth = {h.name: rng.integers(0, h.num_classes, n) for h in (MASK, GENDER)}
    given, flipped = {}, {}
    for h in (MASK, GENDER):
        flipped[h.name] = rng.choice(n, flips, replace=False)
        given[h.name] = truth[h.name].copy()
        shift = rng.integers(1, h.num_classes, flips)   # always another class
        given[h.name][flipped[h.name]] = (truth[h.name][flipped[h.name]] + shift) % h.num_classes
    oof_table(tmp_path, [MASK, GENDER], truth, given, rng)
    p, _ = load_predictions(run_dir=tmp_path)
    numbers, section = analyse_label_issues(p, Thumbnails())
    for h in (MASK, GENDER):
        issues = numbers["heads"][h.name]["issues"]
        found = {int(r["image_id"][3:]): r for r in issues}
        hits = [i for i in flipped[h.name] if i in found]
        recall = len(hits) / flips
        assert recall >= 0.8, (h.name, recall)
        assert all(found[i]["suggested"] == h.classes[truth[h.name][i]] for i in hits)
        assert all(found[i]["label"] == h.classes[given[h.name][i]] for i in hits)
        # ranked: the lowest probability of the given label first, ranks 1..count
        assert [r["rank"] for r in issues] == list(range(1, len(issues) + 1))
        assert [r["p_label"] for r in issues] == sorted(r["p_label"] for r in issues)
        assert len(found) - len(hits) <= flips // 4   # and not much more than the flips
    assert numbers["count"] == sum(len(numbers["heads"][h]["issues"]) for h in ("mask", "gender"))
    fixes = numbers["table"]
    assert list(fixes.columns) == ["id", "field", "value", "image"] and len(fixes) == numbers["csv_rows"]
    assert {s.id for s in section.children} == {"label-issues-mask", "label-issues-gender"}


def test_a_head_too_small_or_of_one_class_is_skipped_with_a_reason(tmp_path):
    rng = np.random.default_rng(1)
    n = 40
    truth = {"mask": rng.integers(0, 3, n), "gender": np.zeros(n, dtype=int), "age": rng.integers(0, 3, n)}
    given = {k: v.copy() for k, v in truth.items()}
    given["age"][8:] = -1   # 8 labelled ages
    oof_table(tmp_path, [MASK, GENDER, AGE], truth, given, rng)
    p, _ = load_predictions(run_dir=tmp_path)
    numbers, section = analyse_label_issues(p, Thumbnails())
    heads = numbers["heads"]
    assert heads["gender"]["skipped"].startswith("every labelled image is male")
    assert heads["age"]["skipped"].startswith("only 8 labelled image(s)")
    assert heads["gender"]["issues"] == heads["age"]["issues"] == [] and heads["mask"]["skipped"] is None
    notes = {s.id: " ".join(b.body for b in s.blocks) for s in section.children}
    assert "not checked, every labelled image is male" in notes["label-issues-gender"]
    assert "not checked, only 8 labelled image(s)" in notes["label-issues-age"]


def _competition(root, people: int) -> pd.DataFrame:
    """A competition layout with `people` people, 7 photos each; returns what the reader makes of it."""
    rows = []
    for i in range(people):
        gender, age = ("male", "female")[i % 2], (22, 45, 66)[i % 3]
        name = f"{i:06d}_{gender}_Asian_{age}"
        (root / "train" / "images" / name).mkdir(parents=True)
        for j, stem in enumerate(STEMS):
            cv2.imwrite(str(root / "train" / "images" / name / f"{stem}.png"), np.full((8, 6, 3), 30 * j, np.uint8))
        rows.append((f"{i:06d}", gender, "Asian", age, name))
    pd.DataFrame(rows, columns=["id", "gender", "race", "age", "path"]).to_csv(root / "train" / "train.csv",
                                                                               index=False)
    return read_competition(root).frame


def test_suggested_fixes_load_back_as_data_label_fixes(tmp_path):
    """The report's CSV, passed back as data.label_fixes, is accepted and sets exactly the labels it suggests."""
    frame = _competition(tmp_path / "data", people=6)
    heads = [MASK, GENDER, AGE]
    truth = {"mask": frame["mask"].map(MASK.classes.index).to_numpy(copy=True),
             "gender": frame["gender"].map(GENDER.classes.index).to_numpy(copy=True),
             "age": np.digitize(frame["age"], AGE.bins)}
    given = {k: v.copy() for k, v in truth.items()}
    # the photos show: person 000001 is male (the folder says female), 000003's mask2 is not worn, 000004 is old
    truth["gender"][(frame["id"] == "000001").to_numpy()] = 0
    truth["mask"][((frame["id"] == "000003") & (frame["stem"] == "mask2")).to_numpy()] = 2
    truth["age"][(frame["id"] == "000004").to_numpy()] = 2
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    oof_table(run_dir, heads, truth, given, np.random.default_rng(3), group=frame["id"], stem=frame["stem"])
    out = build_report(run_dir=run_dir)
    suggested = pd.read_csv(out / CSV, dtype=str, keep_default_na=False)
    assert list(suggested.columns) == ["id", "field", "value", "image"]
    rows = set(map(tuple, suggested.to_numpy().tolist()))
    flips = {("000001", "gender", "male", stem) for stem in STEMS} | {("000003", "mask", "not_wear", "mask2")}
    # only flipped labels, nearly all of them (cleanlab's estimate of how many there are may fall one short); the
    # age candidates need years, so they are left out
    assert rows <= flips and len(rows) >= len(flips) - 2 and ("000003", "mask", "not_wear", "mask2") in rows
    assert len(read_label_fixes(out / CSV)) == len(suggested)
    fixed = read_competition(tmp_path / "data", label_fixes=out / CSV)
    assert fixed.fixes_applied == len(suggested) and fixed.unused_fixes == []
    changed = fixed.frame[["gender", "mask"]].ne(frame[["gender", "mask"]]).any(axis=1)
    assert set(zip(fixed.frame["id"][changed], fixed.frame["stem"][changed])) == {(r[0], r[3]) for r in rows}
    for person, field, value, stem in rows:
        at = (fixed.frame["id"] == person) & (fixed.frame["stem"] == stem)
        assert fixed.frame.loc[at, field].item() == value and frame.loc[at, field].item() != value
    numbers = json.loads((out / "report.json").read_text())["label_issues"]
    ages = numbers["heads"]["age"]["issues"]
    assert {r["id"] for r in ages} == {"000004"} and {r["suggested"] for r in ages} == {">=60"}
    assert numbers["csv_rows"] == len(suggested) and numbers["count"] == len(suggested) + len(ages)
    html = (out / "report.html").read_text()
    assert 'id="label-issues-age"' in html and "add the row id,age,&lt;years&gt;" in html


@pytest.mark.parametrize("n", [1, 2])   # no rows at all: load_table refuses the table first
def test_a_report_with_almost_no_rows_still_comes_out(tmp_path, n):
    rng = np.random.default_rng(0)
    truth = {"gender": np.array([0, 1][:n], dtype=int)}
    oof_table(tmp_path, [GENDER], truth, {"gender": truth["gender"].copy()}, rng)
    p, _ = load_predictions(run_dir=tmp_path)
    numbers, _ = analyse_label_issues(p, Thumbnails())
    assert numbers["count"] == 0 and numbers["heads"]["gender"]["skipped"].startswith(f"only {n} labelled")
