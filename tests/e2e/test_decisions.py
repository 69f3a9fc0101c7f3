"""Tuned decisions (per-head class offsets fitted on OOF) and what predict scores without --gt (CPU, seconds).

Fits run on crafted OOF tables whose right offset is known; predict runs on a tiny random checkpoint in a run dir
(test_predict.make_ckpt) with a hand-written decisions.json beside it.
"""
import json
import shutil

import numpy as np
import pandas as pd
import pytest
from helpers import FAST, make_ckpt, predict, predicted

from multitask.cli import main
from multitask.config import load_config
from multitask.data.ground_truth import read_gt
from multitask.decisions import fit as decisions
from multitask.metrics.table import build_table
from multitask.utils.io import write_csv

HEADS = load_config("configs/quickstart.yaml").composite_heads()


def crafted_oof(path, *, rows=3000, age_bias=1.0, seed=0):
    """OOF of a model that knows every head equally well, except that it under-predicts age >=60 by `age_bias`
    (a log-probability offset): the fit should add it back."""
    rng = np.random.default_rng(seed)
    truth = {h.name: rng.integers(0, h.num_classes, rows) for h in HEADS}
    probs = {}
    for h in HEADS:
        logits = rng.normal(0, 1, (rows, h.num_classes)) + 1.5 * np.eye(h.num_classes)[truth[h.name]]
        if h.name == "age":
            logits[:, 2] -= age_bias
        e = np.exp(logits - logits.max(1, keepdims=True))
        probs[h.name] = e / e.sum(1, keepdims=True)
    table = build_table(ids=[str(i) for i in range(rows)], paths=[""] * rows, heads=HEADS, probs=probs, targets=truth,
                        composite=HEADS)
    table.insert(2, "group", [f"p{i // 10}" for i in range(rows)])   # 10 photos per person
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_csv(table, path)


@pytest.mark.slow
def test_fit_recovers_a_known_offset_and_raises_the_f1(tmp_path):
    doc = decisions.fit_table(crafted_oof(tmp_path / "oof.csv"), draws=200)
    assert doc["applied"] and doc["heads"]["age"]["applied"]
    assert abs(doc["offsets"]["age"][">=60"] - 1.0) <= decisions.GRID_STEP + 1e-9
    assert doc["oof"]["after"] > doc["oof"]["before"] + 0.02
    assert doc["held_out"]["gain"] > 0 and doc["held_out"]["ci95"][0] > 0
    assert doc["heads"]["age"]["f1_after"] > doc["heads"]["age"]["f1_before"]
    assert decisions.fit_table(tmp_path / "oof.csv", draws=200) == doc   # deterministic


def test_offsets_that_do_not_help_on_held_out_rows_are_not_applied(tmp_path):
    doc = decisions.fit_table(crafted_oof(tmp_path / "oof.csv", rows=600, age_bias=0.0), draws=200)
    assert not doc["applied"] and doc["reason"]
    assert all(v == 0 for head in doc["offsets"].values() for v in head.values())
    assert doc["oof"]["after"] >= doc["oof"]["before"]   # in-sample the search always finds something


def test_tune_decisions_cli_writes_decisions_json(tmp_path, capsys):
    run = tmp_path / "run"
    crafted_oof(run / "oof.csv")
    assert main(["tune-decisions", str(run), "--draws", "100"]) == 0
    out = capsys.readouterr().out
    doc = json.loads((run / "decisions.json").read_text())
    assert doc["applied"] and doc["source"] == {"table": "oof.csv", "rows": 3000, "labelled": 3000}
    assert "decisions: composite F1 on OOF" in out and ": applied" in out
    age_row = next(line for line in out.splitlines() if line.startswith("│ age "))
    assert "│ yes " in age_row and f"{doc['heads']['age']['f1_before']:.4f} -> " in age_row


def test_train_fits_decisions_at_the_end(tiny_cfg, capsys):
    from multitask.decisions.fit import after_training
    from multitask.train.run import run_training

    run = run_training(tiny_cfg("train.max_steps=1"))   # every caller's training fits them
    doc = json.loads((run / "decisions.json").read_text())
    assert set(doc["offsets"]) == {"mask", "gender", "age"} and isinstance(doc["applied"], bool)
    assert "decisions: composite F1 on OOF" in capsys.readouterr().out
    (run / "decisions.json").unlink()
    after_training(tiny_cfg("train.decisions=off"), run)
    assert not (run / "decisions.json").exists()


# ------------------------------------------------------------------------------------------------ predict
@pytest.fixture(scope="module")
def world(two_people, tmp_path_factory):
    base = tmp_path_factory.mktemp("decisions")
    make_ckpt(base / "run" / "best.pt", seed=1)
    (base / "plain").mkdir()
    shutil.copy(base / "run" / "best.pt", base / "plain" / "best.pt")   # the same model without decisions
    (base / "run" / "decisions.json").write_text(json.dumps(
        {"applied": True, "offsets": {"age": {"<30": 0.0, "30-59": 0.0, ">=60": 50.0}}}))
    return {"data": two_people, "run": base / "run", "plain": base / "plain",
            "gt": two_people / "eval" / "gt.csv"}


def test_predict_applies_decisions_and_off_restores_the_argmax(world, tmp_path):
    result = predict(ckpts=[world["run"]], data=world["data"], out=tmp_path / "on", gt=world["gt"], **FAST)
    predict(ckpts=[world["run"]], data=world["data"], out=tmp_path / "off", decisions="off", **FAST)
    predict(ckpts=[world["plain"]], data=world["data"], out=tmp_path / "plain", **FAST)
    on, _, probs, _ = predicted(tmp_path / "on")
    off, _, probs_off, _ = predicted(tmp_path / "off")
    assert (on["pred/age"] == 2).all()                                  # +50 on >=60 decides every age
    assert list(on["pred/composite"] % 3) == [2] * len(on)
    assert list(on["pred/mask"]) == list(off["pred/mask"])            # the other heads keep their argmax
    assert all(np.array_equal(probs[k], probs_off[k]) for k in probs)  # probabilities stay the model's
    for name in ("submission.csv", "predictions.csv"):                 # off: exactly the plain argmax
        assert (tmp_path / "off" / name).read_text() == (tmp_path / "plain" / name).read_text()
    saved = json.loads((tmp_path / "on" / "scores.json").read_text())
    assert saved["decisions"]["offsets"] == {"age": {"<30": 0.0, "30-59": 0.0, ">=60": 50.0}}
    assert saved["decisions"]["sources"] == [str((world["run"] / "decisions.json").resolve())]
    assert result["age/acc"] == pytest.approx(np.mean(on["true/age"] == 2))
    joint = predict(ckpts=[world["run"]], data=world["data"], out=tmp_path / "joint", joint=True, **FAST)
    assert joint["decisions"]["offsets"] and (predicted(tmp_path / "joint")[0]["pred/composite"] % 3 == 2).all()


def test_an_ensemble_averages_its_members_offsets(world, tmp_path):
    result = predict(ckpts=[world["run"], world["plain"]], data=world["data"], out=tmp_path, **FAST)
    assert result["decisions"]["offsets"] == {"age": {"<30": 0.0, "30-59": 0.0, ">=60": 25.0}}


@pytest.mark.parametrize("offsets, fragment", [
    ({"height": {"tall": 1.0}}, "offsets for unknown head 'height'; the model's heads are mask, gender, age"),
    ({"age": {"old": 1.0}}, "offsets.age: unknown class 'old'; head age has the classes <30, 30-59, >=60"),
    ({"age": {">=60": "a lot"}}, "offsets.age.>=60 = 'a lot' is not a finite number"),
])
def test_a_malformed_decisions_json_is_one_clear_line(world, tmp_path, capsys, offsets, fragment):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"offsets": offsets}))
    code = main(["predict", "--ckpt", str(world["plain"]), "--data", str(world["data"]), "--out", str(tmp_path / "o"),
                 "--decisions", str(bad), "--workers", "0", "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and fragment in err and str(bad) in err, err


# ------------------------------------------------------------------------------------------------ scoring
def test_a_labelled_manifest_is_scored_without_gt(world, tmp_path):
    gt = pd.read_csv(world["gt"], dtype=str)
    images = world["data"] / "eval" / "images"
    manifest = pd.DataFrame({"path": [str(images / f"{i}") for i in gt["ImageID"]], "mask": gt["mask"],
                             "gender": gt["gender"], "age": gt["age"], "group": gt["group"]})
    manifest.to_csv(tmp_path / "labelled.csv", index=False)
    scored = predict(ckpts=[world["plain"]], data=tmp_path / "labelled.csv", out=tmp_path / "m", **FAST)
    ids = predicted(tmp_path / "m")[0]["image_id"]
    pd.DataFrame({"image_id": ids, "ans": gt["ans"]}).to_csv(tmp_path / "gt.csv", index=False)
    given = predict(ckpts=[world["plain"]], data=tmp_path / "labelled.csv", out=tmp_path / "g",
                        gt=tmp_path / "gt.csv", **FAST)
    for key in ("composite/f1", "composite/acc", "mask/f1", "age/f1", "composite/f1_ci95"):
        assert scored[key] == pytest.approx(given[key]), key
    assert json.loads((tmp_path / "m" / "scores.json").read_text())["intervals"]["resampled"] == "people"


@pytest.mark.parametrize("column", ["age_years", "age"])
def test_gt_years_are_binned_by_eval_bins(tmp_path, column):
    cfg = load_config("configs/age_focus_resnet34.yaml")   # trained with bins [30, 58], judged with [30, 60]
    heads = cfg.composite_heads()
    ids = ["a", "b", "c", "d", "e", "f"]
    pd.DataFrame({"ImageID": ids, "mask": ["wear"] * 6, "gender": ["male"] * 6,
                  column: ["12", "30", "58", "60", "75", ""]}).to_csv(tmp_path / "gt.csv", index=False)
    truth = read_gt(tmp_path / "gt.csv", ids, heads, heads)
    assert list(truth.targets["age"]) == [0, 1, 1, 2, 2, -1]
    assert list(truth.composite) == [0, 1, 1, 2, 2, -1]
