"""Round 3: files and options from others get one line naming the file (exit 2), and no option takes the machine down.

The bootstrap is bounded (drawn lazily in chunks, capped), compare refuses tables that are not what they claim,
crafted exports and checkpoints are checked by their one reader before anything is written.
"""
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import error_line, make_ckpt, tiny_overrides
from test_compare import crafted

from multitask.analysis.compare import compare
from multitask.cli import main
from multitask.data.synthetic import write_synthetic
from multitask.export import command as export
from multitask.formats.manifest import METADATA_KEY
from multitask.metrics.stats import MAX_DRAWS, group_draws
from multitask.utils.io import write_csv

onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed: pip install -e '.[onnx]'")


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


# --------------------------------------------------------------------------------------------------- export
@pytest.fixture(scope="module")
def small_pt(tmp_path_factory):
    return make_ckpt(tmp_path_factory.mktemp("r3export") / "small.pt")


def test_an_opset_torch_does_not_write_is_one_line_naming_the_range(small_pt, tmp_path, capfd):
    assert main(["export", str(small_pt), "--format", "onnx", "--opset", "99", "--out", str(tmp_path / "m.onnx")]) == 2
    out, err = capfd.readouterr()
    assert out == "" and err.count("\n") == 1, (out[:300], err[:300])
    assert "--opset: 99" in err and "choose 7 to" in err and not (tmp_path / "m.onnx").exists()


def test_an_exporter_failure_keeps_its_ir_dump_off_the_terminal(small_pt, tmp_path, capfd, monkeypatch):
    def failing(*args, **kwargs):   # what the TorchScript exporter does: a C++ dump on fd 1, then an exception
        os.write(1, b"Torch IR graph at exception: graph(%0 : Byte(*, 32, 32, 3)\n" * 200)
        raise RuntimeError("Unsupported onnx_opset_version: 17")
    monkeypatch.setattr(torch.onnx, "export", failing)
    assert main(["export", str(small_pt), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 2
    out, err = capfd.readouterr()
    assert "Torch IR" not in out + err and err.count("\n") == 1, err
    assert "at opset 17 (RuntimeError: Unsupported onnx_opset_version: 17)" in err and "another --opset (7 to" in err


# --------------------------------------------------------------------------------------------------- crafted files
def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.fixture(scope="module")
def exported(small_pt, tmp_path_factory):
    """The small model as ONNX and as safetensors, and 7 eval photos to predict on."""
    base = tmp_path_factory.mktemp("r3crafted")
    write_synthetic(base / "data", people=1, width=32, height=32, seed=3)
    export.run_export(ckpt=small_pt, fmt="onnx", out=base / "m.onnx")
    export.run_export(ckpt=small_pt, fmt="safetensors", out=base / "st")
    return base


def _predict_fails(exported, tmp_path, capsys, ckpt, *extra) -> str:
    out = tmp_path / "out"
    code = main(["predict", "--ckpt", str(ckpt), "--data", str(exported / "data" / "eval" / "images"),
                 "--out", str(out), "--device", "cpu", *extra])
    message = error_line(capsys)
    assert code == 2 and _files(out) == [], message   # refused before anything was written
    return message


def _with_manifest(exported, tmp_path, change) -> Path:
    """m.onnx with its manifest changed by `change(manifest)`."""
    model = onnx.load(str(exported / "m.onnx"))
    entry = next(p for p in model.metadata_props if p.key == METADATA_KEY)
    entry.value = change(json.loads(entry.value))
    path = tmp_path / "crafted.onnx"
    onnx.save(model, str(path))
    return path


def _sliced_output(exported, tmp_path) -> Path:
    """m.onnx whose age output keeps 2 of its 3 columns: the right metadata, the wrong output shape."""
    model = onnx.load(str(exported / "m.onnx"))
    for node in model.graph.node:
        node.input[:] = ["age_full" if o == "age" else o for o in node.input]
        node.output[:] = ["age_full" if o == "age" else o for o in node.output]
    model.graph.initializer.extend([onnx.numpy_helper.from_array(np.array([v], np.int64), name)
                                    for name, v in (("s0", 0), ("s2", 2), ("s1", 1))])
    model.graph.node.append(onnx.helper.make_node("Slice", ["age_full", "s0", "s2", "s1"], ["age"]))
    age = next(o for o in model.graph.output if o.name == "age")
    age.type.tensor_type.shape.dim[1].dim_value = 2
    path = tmp_path / "sliced.onnx"
    onnx.save(model, str(path))
    return path


def test_an_onnx_graph_that_disagrees_with_its_manifest_is_refused_when_loaded(exported, tmp_path, capsys):
    sliced = _sliced_output(exported, tmp_path)
    message = _predict_fails(exported, tmp_path, capsys, sliced)
    assert message.startswith(f"{sliced}: the ONNX graph's output age has shape [1, 2], but its manifest gives age 3 "
                              f"values per image")

    def bigger(manifest):
        manifest["config"]["data"]["image_size"] = manifest["image_size"] = [48, 40]
        manifest["input"].update(height=48, width=40)
        return json.dumps(manifest)
    resized = _with_manifest(exported, tmp_path, bigger)
    message = _predict_fails(exported, tmp_path, capsys, resized)
    assert message.startswith(f"{resized}: the ONNX graph takes tensor(uint8) ['batch', 32, 32, 3], but its "
                              f"manifest says uint8 NHWC [batch, 48, 40, 3]")


NESTED = "[" * 900 + "]" * 900


@pytest.mark.parametrize("change, expected", [
    (lambda m: json.dumps(m).replace('"name": ', f'"name": {NESTED}, "x": ', 1), "nested more than 32 levels"),
    (lambda m: "[" * 100_000 + "]" * 100_000, "not readable JSON (maximum recursion depth"),
    (lambda m: json.dumps(m).replace('"version": 1', '"version": ' + "9" * 5001, 1), "(4300 digits)"),
    (lambda m: json.dumps({**m, "version": "abc"}), "export manifest version 'abc' is not a version number"),
    (lambda m: json.dumps({**m, "version": None}), "export manifest version None is not a version number"),
    (lambda m: json.dumps({**m, "version": [1]}), "export manifest version [1] is not a version number"),
    (lambda m: json.dumps({**m, "config": "hello"}), 'its "config" should be the training config (a JSON object), '
                                                     'found "hello"'),
    (lambda m: json.dumps({k: v for k, v in m.items() if k != "config"}), 'its "config" should be the training '
                                                                         'config (a JSON object), found null'),
    (lambda m: json.dumps({**m, "decisions": {"applied": True, "offsets": {"age": {"<30": float("nan")}}}}),
     "its decisions: offsets.age.<30 = nan is not a finite number"),
])
def test_a_crafted_manifest_is_one_line_naming_the_file_read(exported, tmp_path, capsys, change, expected):
    """The same manifest reader for both formats: ONNX metadata and safetensors config.json."""
    crafted_onnx = _with_manifest(exported, tmp_path, change)
    message = _predict_fails(exported, tmp_path, capsys, crafted_onnx)
    assert message.startswith(str(crafted_onnx)) and expected in message, message
    folder = tmp_path / "st"
    shutil.copytree(exported / "st", folder)
    config = folder / "config.json"
    config.write_text(change(json.loads(config.read_text())))
    message = _predict_fails(exported, tmp_path, capsys, folder)
    assert message.startswith(str(config)) and expected in message, message


@pytest.mark.parametrize("text, expected", [
    ('{"applied": true, "offsets": {"age": {"<30": ' + "9" * 5001 + "}}}", "(4300 digits)"),
    ('{"applied": true, "offsets": {"age": {"<30": ' + NESTED + "}}}", "nested more than 32 levels"),
    ('{"applied": true, "offsets": {"age": {"<30": ' + "[" * 100_000 + "]" * 100_000 + "}}}", "recursion depth"),
])
def test_a_crafted_decisions_json_is_one_line(exported, small_pt, tmp_path, capsys, text, expected):
    path = tmp_path / "decisions.json"
    path.write_text(text)
    message = _predict_fails(exported, tmp_path, capsys, small_pt, "--decisions", str(path))
    assert message.startswith(f"{path}: ") and expected in message, message


@pytest.fixture(scope="module")
def resumable(synth_root, tmp_path_factory):
    """A 1-step run that may go on (epochs 2): its last.pt is what a resume reads."""
    tmp = tmp_path_factory.mktemp("r3resume")
    assert main(["train", "--config", "configs/quickstart.yaml",
                 *tiny_overrides(synth_root, tmp, "train.max_steps=1", "train.epochs=2")]) == 0
    return next((tmp / "runs" / "quickstart").iterdir())


@pytest.mark.parametrize("change, expected", [
    (lambda c: c.update(version="abc"), "checkpoint version 'abc' is not a version number"),
    (lambda c: c.pop("rng"), "the checkpoint's 'rng' entry should be a dict, found nothing"),
    (lambda c: c.update(config="hello"), "the checkpoint's 'config' entry should be a dict, found a str"),
    (lambda c: c["config"]["data"].update(image_size=json.loads("[" * 60 + "]" * 60)),
     "its config: nested more than 32 levels"),
])
def test_a_crafted_last_pt_is_refused_before_the_run_dir_changes(resumable, tmp_path, capsys, change, expected):
    run = tmp_path / "run"
    shutil.copytree(resumable, run)
    ckpt = torch.load(run / "last.pt", weights_only=True)
    change(ckpt)
    torch.save(ckpt, run / "last.pt")
    before = _files(run)
    code = main(["train", "--resume", str(run), "train.max_steps=2"])
    message = error_line(capsys)
    assert code == 2 and expected in message and str(run / "last.pt") in message, message
    assert _files(run) == before   # no tb/ event file, no log: checked before the run dir was touched
