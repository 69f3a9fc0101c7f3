import base64
import json
import re

import cv2
import numpy as np
import pandas as pd
import pytest
from helpers import mask_heads
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

from multitask.analysis.report.age import threshold_sweep
from multitask.analysis.report.build import build_report
from multitask.analysis.report.inputs import load_predictions
from multitask.analysis.report.summary import key_numbers
from multitask.cli import main
from multitask.heads import HeadSpec, composite_encode
from multitask.metrics.stats import head_scores
from multitask.metrics.table import build_table
from multitask.utils.errors import UserError
from multitask.utils.io import write_csv

STEMS = ["mask1", "mask2", "incorrect_mask", "normal"]
FLIPPED = 0  # row whose gender label the tests flip against a very confident prediction


def synthetic_predictions(folder, *, heads=None, n=72, seed=0, unlabelled=None, with_targets=True):
    """A predictions table as training writes it: decent but imperfect probabilities, tiny real PNGs, metadata."""
    heads = heads or mask_heads()
    rng = np.random.default_rng(seed)
    image_dir = folder / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = image_dir / f"img{i:03d}.png"
        image = np.full((40, 32, 3), rng.integers(0, 255, 3), np.uint8)
        cv2.circle(image, (16, 18), 9, (255, 255, 255), -1)
        cv2.imwrite(str(path), image)
        paths.append(path)
    targets, probs = {}, {}
    for head in heads:
        y = rng.integers(0, head.num_classes, n)
        logits = rng.normal(size=(n, head.num_classes)) + 1.5 * np.eye(head.num_classes)[y]
        p = np.exp(logits)
        targets[head.name], probs[head.name] = y, p / p.sum(1, keepdims=True)
    if "gender" in targets:
        targets["gender"][FLIPPED] = 0
        probs["gender"][FLIPPED] = [0.02, 0.98]
    for name, fraction in (unlabelled or {}).items():
        targets[name][rng.random(n) < fraction] = -1
    ages = {0: (18, 29), 1: (30, 59), 2: (60, 75)}
    binned = next((h.name for h in heads if h.bins), None)
    age_years = ([rng.integers(*ages[int(a)]) if a >= 0 else 40 for a in targets[binned]] if binned
                 else rng.integers(18, 75, n))
    meta = pd.DataFrame({"age_years": age_years, "race": rng.choice(["Asian", "Other"], n),
                         "gender": rng.choice(["male", "female"], n), "stem": [STEMS[i % 4] for i in range(n)],
                         "fold": np.zeros(n, dtype=int)})
    composite = heads if len(heads) == 3 else []
    table = build_table(ids=[f"img{i:03d}" for i in range(n)], paths=paths, heads=heads, probs=probs,
                        targets=targets if with_targets else None, composite=composite, meta=meta)
    table.insert(2, "group", [f"p{i // 4:03d}" for i in range(n)])
    return table, targets, probs


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    table, targets, probs = synthetic_predictions(run_dir)
    write_csv(table, run_dir / "oof.csv")
    out = build_report(run_dir=run_dir)
    return run_dir, out, table, targets, probs


def test_numbers_match_sklearn(run):
    run_dir, out, table, targets, probs = run
    assert out == run_dir / "report"
    numbers = json.loads((out / "report.json").read_text())
    for head in mask_heads():
        got = numbers["heads"][head.name]
        y, pred = targets[head.name], probs[head.name].argmax(1)
        labels = list(range(head.num_classes))
        precision, recall, f1, support = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
        np.testing.assert_allclose(got["precision"], precision)
        np.testing.assert_allclose(got["recall"], recall)
        np.testing.assert_allclose(got["f1_per_class"], f1)
        assert got["support"] == support.tolist()
        assert got["confusion"] == confusion_matrix(y, pred, labels=labels).tolist()
        assert got["f1"] == pytest.approx(f1_score(y, pred, labels=labels, average="macro"))
        assert 0 <= got["calibration"]["ece"] <= 1
        assert sum(b["count"] for b in got["calibration"]["bins"]) == len(y)
    heads = mask_heads()
    y_true = composite_encode(targets, heads)
    y_pred = composite_encode({h.name: probs[h.name].argmax(1) for h in heads}, heads)
    comp = numbers["composite"]
    assert comp["f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert comp["confusion"] == confusion_matrix(y_true, y_pred, labels=list(range(18))).tolist()
    wrong = int((y_true != y_pred).sum())
    assert comp["blame"]["errors"] == wrong
    only_gender = sum(1 for t, q in zip(y_true, y_pred) if t != q and (t // 6, t % 3) == (q // 6, q % 3))
    assert comp["blame"]["by_head"]["gender"]["only"] == only_gender
    among = [comp["blame"]["by_head"][h.name]["among"] for h in heads]
    assert sum(among) >= wrong  # every wrong composite has at least one wrong head


def test_html_has_every_section_and_embeds_its_images(run):
    _, out, *_ = run
    html = (out / "report.html").read_text()
    for section in ["contents", "summary", "head-mask", "head-gender", "head-age", "head-age-confusion",
                    "head-age-classes", "head-age-pairs", "head-age-worst", "head-age-calibration", "composite",
                    "composite-confusion", "composite-blame", "age", "age-years", "age-threshold", "breakdowns",
                    "breakdown-race", "breakdown-gender", "label-issues", "label-issues-gender"]:
        assert f'id="{section}"' in html, section
        assert f"(#{section})" in (out / "report.md").read_text() or section == "contents"
    images = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html)
    assert len(images) >= 20  # figures for 3 heads + composite + age + breakdowns, plus thumbnails
    assert base64.b64decode(images[0])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "src=\"http" not in html and "<link" not in html  # self-contained
    markdown = (out / "report.md").read_text()
    for name in re.findall(r"\]\(([^)]+\.png)\)", markdown):
        assert (out / name).is_file(), name
    thumb = cv2.imread(str(next((out / "thumbs").glob("*.png"))))
    assert thumb is not None and thumb.shape[0] == 72


def test_label_issues_rank_the_flipped_label_first(run):
    _, out, table, *_ = run
    suggested = pd.read_csv(out / "label_fixes_suggested.csv", dtype=str, keep_default_na=False)
    assert list(suggested.columns) == ["id", "field", "value", "image"]
    row = suggested[(suggested["id"] == table["group"][FLIPPED]) & (suggested["field"] == "gender")]
    assert row["value"].tolist() == ["female"]
    assert row["image"].tolist() == [table["stem"][FLIPPED]]
    report = json.loads((out / "report.json").read_text())
    numbers = report["label_issues"]
    gender = numbers["heads"]["gender"]["issues"]
    # p(male) = 0.02 against a male label: the least believable label of the head, so ranked first
    assert gender[0]["image_id"] == f"img{FLIPPED:03d}" and gender[0]["p_label"] == pytest.approx(0.02)
    assert gender[0]["suggested"] == "female" and gender[0]["rank"] == 1
    for head in numbers["heads"].values():
        assert [r["p_label"] for r in head["issues"]] == sorted(r["p_label"] for r in head["issues"])
        assert all(r["label"] != r["suggested"] for r in head["issues"])
    assert numbers["count"] == sum(len(h["issues"]) for h in numbers["heads"].values()) >= 1
    assert numbers["csv_rows"] == len(suggested) and "age" not in set(suggested["field"])  # age fixes take years
    assert key_numbers(report)["label_issues/count"] == numbers["count"]
    html = (out / "report.html").read_text()
    assert f"img{FLIPPED:03d}" in html and f"{numbers['count']:,} label-issue candidates" in html


def test_breakdown_and_age_numbers(run):
    _, out, table, targets, probs = run
    numbers = json.loads((out / "report.json").read_text())
    by_race = {r["value"]: r for r in numbers["breakdowns"]["race"]}
    for race, row in by_race.items():
        inside = (table["race"] == race).to_numpy()
        assert row["images"] == inside.sum()
        assert row["age_acc"] == pytest.approx(np.mean(targets["age"][inside] == probs["age"][inside].argmax(1)))
    t = numbers["age"]["threshold"]
    assert len(t["biases"]) == 21 and t["biases"][0] == -2 and t["biases"][-1] == 2
    assert t["best_f1"] == pytest.approx(max(t["composite_f1"]))
    assert t["gain"] == pytest.approx(t["best_f1"] - t["composite_f1"][10])
    assert sum(r["images"] for r in numbers["age"]["error_by_years"]) == len(table)


def test_age_threshold_finds_an_underpredicted_class(tmp_path):
    table, targets, probs = synthetic_predictions(tmp_path, n=90, seed=3)
    old = targets["age"] == 2
    p = probs["age"].copy()
    p[old] = [0.3, 0.45, 0.25]  # the old are always called 30-59 unless their class is pushed up
    table["prob/age/<30"], table["prob/age/30-59"], table["prob/age/>=60"] = p.T
    table["pred/age"] = p.argmax(1)
    table["pred/composite"] = composite_encode({"mask": probs["mask"].argmax(1), "gender": probs["gender"].argmax(1),
                                                "age": p.argmax(1)}, mask_heads())
    write_csv(table, tmp_path / "oof.csv")
    p, _ = load_predictions(run_dir=tmp_path)
    t = threshold_sweep(p, p.heads[2])
    assert t["class"] == ">=60" and t["best_bias"] > 0 and t["gain"] > 0.01
    shifted = np.log(p.probs["age"]) + np.array([0, 0, t["best_bias"]])
    codes = composite_encode({"mask": probs["mask"].argmax(1), "gender": probs["gender"].argmax(1),
                              "age": shifted.argmax(1)}, mask_heads())
    assert t["best_f1"] == pytest.approx(f1_score(composite_encode(targets, mask_heads()), codes, average="macro"))


@pytest.mark.slow
def test_partial_labels(tmp_path):
    table, targets, probs = synthetic_predictions(tmp_path, unlabelled={"age": 0.3, "gender": 0.2}, seed=1)
    write_csv(table, tmp_path / "oof.csv")
    numbers = json.loads((build_report(run_dir=tmp_path) / "report.json").read_text())
    for name in ("gender", "age"):
        keep = targets[name] >= 0
        assert numbers["heads"][name]["labelled"] == keep.sum()
        assert numbers["heads"][name]["f1"] == pytest.approx(
            f1_score(targets[name][keep], probs[name][keep].argmax(1), labels=list(range(len(probs[name][0]))),
                     average="macro"))
    both = (targets["gender"] >= 0) & (targets["age"] >= 0)
    assert numbers["composite"]["labelled"] == both.sum()


def test_one_head_only(tmp_path):
    table, *_ = synthetic_predictions(tmp_path, heads=mask_heads()[2:])
    write_csv(table, tmp_path / "oof.csv")
    out = build_report(run_dir=tmp_path, out=tmp_path / "elsewhere")
    numbers = json.loads((out / "report.json").read_text())
    assert list(numbers["heads"]) == ["age"] and "composite" not in numbers
    assert numbers["age"]["threshold"]["composite_f1"] is None  # swept on age F1 alone
    html = (out / "report.html").read_text()
    assert 'id="head-age"' in html and 'id="composite"' not in html
    assert 'id="skipped"' in html and "no composite label" in html


@pytest.mark.slow
def test_age_sections_follow_the_head_with_bins_not_its_name(tmp_path):
    """age renamed years_bin (with bins), and the composite order mask, years_bin, gender read from the table."""
    mask, gender, age = mask_heads()
    years = HeadSpec(classes=age.classes, name="years_bin", bins=[30, 60])
    table, targets, probs = synthetic_predictions(tmp_path, heads=[mask, years, gender], n=60, seed=5)
    order = [mask, years, gender]
    assert table["composite/heads"].eq("mask,years_bin,gender").all() and table["bins/years_bin"].eq("30,60").all()
    write_csv(table, tmp_path / "oof.csv")
    numbers = json.loads((build_report(run_dir=tmp_path) / "report.json").read_text())
    html = (tmp_path / "report" / "report.html").read_text()
    for section in ("age", "age-years", "age-threshold"):
        assert f'id="{section}"' in html, section
    assert numbers["age"]["head"] == "years_bin" and numbers["age"]["threshold"]["class"] == ">=60"
    assert numbers["composite"]["heads"] == ["mask", "years_bin", "gender"]
    y_pred = composite_encode({h.name: probs[h.name].argmax(1) for h in order}, order)
    assert numbers["composite"]["f1"] == pytest.approx(f1_score(composite_encode(targets, order), y_pred,
                                                                average="macro"))
    assert numbers["age"]["threshold"]["f1_at_zero"] == pytest.approx(numbers["composite"]["f1"])
    assert "years_bin/best_bias" in key_numbers(numbers)


def test_a_table_without_a_composite_order_gets_no_composite(tmp_path):
    """No guessing from names or by trying head orders: the order is what the table records, or none."""
    table, *_ = synthetic_predictions(tmp_path, n=24)
    write_csv(table.drop(columns=["composite/heads"]), tmp_path / "oof.csv")
    p, _ = load_predictions(run_dir=tmp_path)
    assert p.composite == [] and any("no composite label" in note for note in p.notes)


@pytest.mark.slow
def test_pred_with_gt(tmp_path):
    table, targets, probs = synthetic_predictions(tmp_path, with_targets=False)
    table = table.drop(columns=["age_years", "group"])
    write_csv(table, tmp_path / "predictions.csv")
    heads = mask_heads()
    gt = pd.DataFrame({"ImageID": table["image_id"], "ans": composite_encode(targets, heads),
                       "mask": [heads[0].classes[v] for v in targets["mask"]],
                       "gender": [heads[1].classes[v] for v in targets["gender"]],
                       "age": [heads[2].classes[v] for v in targets["age"]], "age_years": 40})
    gt.iloc[::-1].to_csv(tmp_path / "gt.csv", index=False)  # order must not matter: joined on the id
    out = build_report(pred=tmp_path / "predictions.csv", gt=tmp_path / "gt.csv")
    assert out == tmp_path / "report"
    numbers = json.loads((out / "report.json").read_text())
    y_pred = composite_encode({h.name: probs[h.name].argmax(1) for h in heads}, heads)
    assert numbers["composite"]["f1"] == pytest.approx(f1_score(composite_encode(targets, heads), y_pred,
                                                                average="macro"))
    # ans alone is enough: decoded into the three heads
    gt[["ImageID", "ans"]].to_csv(tmp_path / "ans.csv", index=False)
    p, _ = load_predictions(pred=tmp_path / "predictions.csv", gt=tmp_path / "ans.csv")
    for name in ("mask", "gender", "age"):
        np.testing.assert_array_equal(p.targets[name], targets[name])
    assert "age_years" not in p.table.columns


def test_bad_inputs_are_one_line_errors(tmp_path, capsys):
    with pytest.raises(UserError, match="no oof.csv"):
        build_report(run_dir=tmp_path)
    assert main(["report", str(tmp_path)]) == 2
    assert "run a training first" in capsys.readouterr().err
    table, *_ = synthetic_predictions(tmp_path, n=8, with_targets=False)
    write_csv(table, tmp_path / "predictions.csv")
    with pytest.raises(UserError, match="--gt"):
        build_report(pred=tmp_path / "predictions.csv")
    pd.DataFrame({"ImageID": ["nope"], "ans": [0]}).to_csv(tmp_path / "gt.csv", index=False)
    with pytest.raises(UserError, match="none of the 8 predicted images has a row"):
        build_report(pred=tmp_path / "predictions.csv", gt=tmp_path / "gt.csv")
    with pytest.raises(UserError, match="unknown tracker"):
        build_report(pred=tmp_path / "predictions.csv", log=["mlflow"])


@pytest.mark.slow
def test_missing_images_and_tensorboard(tmp_path):
    table, *_ = synthetic_predictions(tmp_path, n=24)
    table.loc[:5, "path"] = "does/not/exist.png"
    write_csv(table, tmp_path / "oof.csv")
    assert main(["report", str(tmp_path), "--log", "tensorboard"]) == 0
    html = (tmp_path / "report" / "report.html").read_text()
    assert "grey placeholders" in html
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_after_tuned_decisions_the_report_scores_each_head_as_compare_does(tmp_path):
    """A run whose decisions moved labels off the argmax: the report's per-head and composite F1 are those of the
    decided labels (pred/<head>, pred/composite), exactly compare's, and not the argmax's."""
    from multitask.analysis.compare import load_item
    from multitask.decisions.apply import decide
    from multitask.heads import composite_encode
    from multitask.metrics.intervals import score_intervals

    heads = mask_heads()
    table, targets, probs = synthetic_predictions(tmp_path)
    offsets = {"age": np.array([0.0, 0.0, 1.2]), "mask": np.array([0.0, 0.6, 0.0])}   # as decisions.json applies
    decided = decide(probs, heads, offsets)
    for head in heads:
        table[f"pred/{head.name}"] = decided[head.name]
    table["pred/composite"] = composite_encode(decided, heads)
    write_csv(table, tmp_path / "oof.csv")
    numbers = json.loads((build_report(run_dir=tmp_path) / "report.json").read_text())
    compared = score_intervals(*load_item(tmp_path / "oof.csv"), draws=20).values
    for name in ("mask", "gender", "age"):
        assert numbers["heads"][name]["f1"] == pytest.approx(compared[name][0], abs=1e-12)
    assert numbers["composite"]["f1"] == pytest.approx(compared["composite"][0], abs=1e-12)
    argmax_f1 = head_scores(targets["age"], probs["age"].argmax(1), 3)["f1"]
    assert numbers["heads"]["age"]["f1"] != pytest.approx(argmax_f1)   # the offsets did move the score
    assert numbers["heads"]["age"]["decided_off_argmax"] == int((decided["age"] != probs["age"].argmax(1)).sum()) > 0
    page = (tmp_path / "report" / "report.md").read_text()
    assert "Scored on the decided labels (pred/age)" in page
