"""Export (ONNX, safetensors) and the onnxruntime backend of predict, on tiny random models (CPU, seconds each).

The exported model must say what PyTorch says: same probabilities (fp32, |delta| <= 1e-3), same argmax, the same
submission.csv through predict, alone or mixed into an ensemble; bad files end in one line and exit code 2.
"""
import copy
import json
import pickle
import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed: pip install -e '.[onnx]'")
import os
from pathlib import Path

import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import pytest
from helpers import FAST, SINGLE18, error_line, files_under, image_count, make_ckpt, predict, predicted  # noqa: E402

from multitask.cli import main  # noqa: E402
from multitask.config import to_dict  # noqa: E402
from multitask.data.synthetic import write_synthetic  # noqa: E402
from multitask.export import command as export  # noqa: E402
from multitask.formats import onnx as export_onnx  # noqa: E402
from multitask.formats.manifest import METADATA_KEY  # noqa: E402
from multitask.formats.parity import synthetic_faces  # noqa: E402
from multitask.heads import joint_probabilities  # noqa: E402
from multitask.infer import backends  # noqa: E402
from multitask.runs.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint  # noqa: E402
from multitask.utils.errors import UserError  # noqa: E402

QUICKSTART = ["data.image_size=[96,72]"]          # the quickstart's input size (height, width)
DECISIONS = {"applied": True, "offsets": {"age": {"<30": 0.0, "30-59": 0.0, ">=60": 0.25}}}   # a decisions.json


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    base = tmp_path_factory.mktemp("export")
    write_synthetic(base / "data", people=2, width=72, height=96, seed=3)   # 14 eval images
    ckpt = make_ckpt(base / "r18.pt", size=(96, 72), seed=1)   # the quickstart size (real trunks: below)
    onnx_result = export.run_export(ckpt=ckpt, fmt="onnx")
    export.run_export(ckpt=ckpt, fmt="safetensors")
    return {"base": base, "data": base / "data", "gt": base / "data" / "eval" / "gt.csv", "pt": ckpt,
            "onnx": base / "r18.onnx", "st": base / "r18_safetensors", "result": onnx_result,
            "small": make_ckpt(base / "small.pt", seed=5)}   # 32x32: for the tests that export again


def manifest_of(path):
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    return json.loads(meta[METADATA_KEY])


def test_onnx_says_what_pytorch_says(made):
    assert made["onnx"].is_file() and made["result"]["parity"]["max_abs_delta"] <= 1e-3
    onnx.checker.check_model(str(made["onnx"]), full_check=True)
    net, cfg = model_from_checkpoint(load_checkpoint(made["pt"]))
    session = ort.InferenceSession(str(made["onnx"]), providers=["CPUExecutionProvider"])
    assert [(i.name, i.type) for i in session.get_inputs()] == [("images", "tensor(uint8)")]
    assert [o.name for o in session.get_outputs()] == ["mask", "gender", "age", "composite"]
    images = synthetic_faces(200, 96, 72)        # other faces than the export's own parity check
    with torch.no_grad():
        reference = {k: v.softmax(-1).numpy() for k, v in net(torch.from_numpy(images).permute(0, 3, 1, 2)).items()}
    for batch in (images[:1], images[:7], images):       # the batch axis is dynamic
        got = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"images": batch})))
        for head, ref in reference.items():
            assert np.abs(got[head] - ref[:len(batch)]).max() <= 1e-3, head
            assert np.mean(got[head].argmax(1) == ref[:len(batch)].argmax(1)) >= 0.995, head
        heads = [cfg.heads[n] for n in ("mask", "gender", "age")]
        np.testing.assert_allclose(got["composite"], joint_probabilities(got, heads), atol=1e-6)
    assert np.ptp(reference["mask"], axis=0).max() > 0.05    # not a constant model: the images' outputs differ


@pytest.mark.slow
@pytest.mark.parametrize("backbone, size", [("resnet18", (96, 72)), ("efficientnet_b0", (64, 64))])
def test_real_timm_trunks_export_within_parity(backbone, size, tmp_path):
    """The tracer follows the trunks people train (the other tests use timm's tiny test_resnet)."""
    ckpt = make_ckpt(tmp_path / "m.pt", backbone=backbone, size=size, seed=1)
    result = export.run_export(ckpt=ckpt, fmt="onnx")
    assert result["parity"]["max_abs_delta"] <= 1e-3 and result["parity"]["min_agreement"] >= 0.995
    onnx.checker.check_model(str(tmp_path / "m.onnx"), full_check=True)


def test_metadata_and_config_json_describe_the_model(made):
    manifest = manifest_of(made["onnx"])
    ckpt = load_checkpoint(made["pt"])
    assert manifest["trained_heads"] == ["mask", "gender", "age"]
    assert manifest["heads"]["mask"]["classes"] == ["wear", "incorrect", "not_wear"]
    assert manifest["composite"]["heads"] == ["mask", "gender", "age"]
    assert manifest["composite"]["classes"][13] == "not_wear/male/30-59"     # mask*6 + gender*3 + age
    assert manifest["input"] == {"name": "images", "dtype": "uint8", "layout": "NHWC", "channels": "RGB",
                                 "range": [0, 255], "batch": "dynamic", "height": 96, "width": 72}
    assert manifest["image_size"] == [96, 72] and manifest["outputs"][-1] == "composite"
    assert manifest["config"] == ckpt["config"] and len(manifest["config_sha256"]) == 64
    assert manifest["decisions"] == {} and manifest["crop"] is None and manifest["quantization"] is None
    config = json.loads((made["st"] / "config.json").read_text())
    same = lambda d: {k: v for k, v in d.items() if k not in ("outputs", "weights", "exported_with")}  # noqa: E731
    assert same(config) == same(manifest) and config["weights"] == "model.safetensors"
    assert sorted(p.name for p in made["st"].iterdir()) == ["config.json", "model.safetensors"]


@pytest.mark.slow
def test_predict_writes_the_same_submission_from_every_format(made, tmp_path):
    outs = {}
    for name, ckpt, backend in (("pt", made["pt"], "auto"), ("onnx", made["onnx"], "auto"),
                                ("st", made["st"], "auto"), ("mem", made["pt"], "onnxruntime")):
        outs[name] = tmp_path / name
        result = predict(ckpts=[ckpt], data=made["data"], out=outs[name], tta=["identity", "hflip", "shift"],
                             gt=made["gt"], backend=backend, **FAST)
        assert 0 <= result["composite/f1"] <= 1
    expected = (outs["pt"] / "submission.csv").read_text()
    _, _, reference, _ = predicted(outs["pt"])
    for name in ("onnx", "st", "mem"):
        assert (outs[name] / "submission.csv").read_text() == expected, name
        _, _, probs, _ = predicted(outs[name])
        for head in reference:
            np.testing.assert_allclose(probs[head], reference[head], atol=1e-5, err_msg=f"{name} {head}")


def test_a_cropped_model_exports_its_crop_and_predicts_through_it(made, tmp_path):
    """The graph takes the cut image: the manifest names the crop, and predict cuts it for the ONNX member too."""
    ckpt = make_ckpt(tmp_path / "center.pt", seed=2, overrides=["data.crop=center", "data.crop_margin=0.3"])
    export.run_export(ckpt=ckpt, fmt="onnx")
    assert manifest_of(tmp_path / "center.onnx")["crop"] == {"mode": "center", "margin": 0.3}
    outs = {}
    for name, member in (("pt", ckpt), ("onnx", tmp_path / "center.onnx")):
        outs[name] = tmp_path / name
        predict(ckpts=[member], data=made["data"], out=outs[name], **FAST)
    assert (outs["onnx"] / "submission.csv").read_text() == (outs["pt"] / "submission.csv").read_text()
    whole = tmp_path / "whole"   # the same weights (same seed), fed the whole photo
    predict(ckpts=[make_ckpt(tmp_path / "whole.pt", seed=2)], data=made["data"], out=whole, **FAST)
    _, _, cropped, _ = predicted(outs["pt"])
    _, _, uncut, _ = predicted(whole)
    assert not np.allclose(cropped["mask"], uncut["mask"])   # the crop changed what the model saw


def test_ensemble_mixes_onnx_and_pytorch_members(made, tmp_path):
    other = make_ckpt(tmp_path / "b.pt", backbone="efficientnet_b0", size=(40, 40), seed=2)
    predict(ckpts=[made["pt"], other], data=made["data"], out=tmp_path / "pt", weights=[1, 3], **FAST)
    predict(ckpts=[made["onnx"], other], data=made["data"], out=tmp_path / "mixed", weights=[1, 3], **FAST)
    assert (tmp_path / "pt" / "submission.csv").read_text() == (tmp_path / "mixed" / "submission.csv").read_text()
    _, _, a, _ = predicted(tmp_path / "pt")
    _, _, b, _ = predicted(tmp_path / "mixed")
    for head in a:
        np.testing.assert_allclose(a[head], b[head], atol=1e-5)


def test_single18_fixed_batch_and_joint(made, tmp_path):
    ckpt = make_ckpt(tmp_path / "s18.pt", seed=3, overrides=SINGLE18)
    export.run_export(ckpt=ckpt, fmt="onnx", batch="5", data=made["data"])
    manifest = manifest_of(tmp_path / "s18.onnx")
    assert manifest["outputs"] == ["class18", "mask", "gender", "age", "composite"] and manifest["input"]["batch"] == 5
    session = ort.InferenceSession(str(tmp_path / "s18.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[0] == 5
    for backend_ckpt, name in ((ckpt, "pt"), (tmp_path / "s18.onnx", "onnx")):   # 14 images in batches of 5
        predict(ckpts=[backend_ckpt], data=made["data"], out=tmp_path / name, joint=True, **FAST)
    assert (tmp_path / "pt" / "submission.csv").read_text() == (tmp_path / "onnx" / "submission.csv").read_text()


@pytest.mark.slow
def test_decisions_and_config_travel_with_every_format(made, tmp_path):
    """The run dir's decisions.json (tuned class offsets) reaches the ONNX metadata, config.json and the loaded model
    of every backend unchanged, and predict applies it alike on PyTorch and onnxruntime."""
    ckpt = load_checkpoint(made["small"])
    with_decisions = tmp_path / "d.pt"
    save_checkpoint(with_decisions, ckpt)
    (tmp_path / "decisions.json").write_text(json.dumps(DECISIONS))
    expected = {**DECISIONS, "path": str((tmp_path / "decisions.json").resolve())}
    export.run_export(ckpt=with_decisions, fmt="onnx", opset=18)
    export.run_export(ckpt=with_decisions, fmt="safetensors")
    assert manifest_of(tmp_path / "d.onnx")["decisions"] == expected
    assert onnx.load(str(tmp_path / "d.onnx")).opset_import[0].version == 18
    assert json.loads((tmp_path / "d_safetensors" / "config.json").read_text())["decisions"] == expected
    for source, backend in ((with_decisions, "auto"), (tmp_path / "d.onnx", "auto"),
                            (tmp_path / "d_safetensors", "auto"), (with_decisions, "onnxruntime")):
        model, cfg = backends.load_model(source, backend=backend)
        assert model.decisions == expected, (source, backend)
        assert to_dict(cfg) == to_dict(model_from_checkpoint(ckpt)[1])
    (tmp_path / "decisions.json").unlink()   # the ONNX file carries its own copy
    results = {"pt": predict(ckpts=[made["small"]], data=made["data"], out=tmp_path / "pt",
                                 decisions=str(export_decisions(tmp_path)), **FAST),
               "onnx": predict(ckpts=[tmp_path / "d.onnx"], data=made["data"], out=tmp_path / "onnx", **FAST)}
    assert results["pt"]["decisions"]["offsets"] == results["onnx"]["decisions"]["offsets"] == DECISIONS["offsets"]
    tables = [predicted(tmp_path / name)[0] for name in ("pt", "onnx")]
    columns = [c for c in tables[0].columns if c.startswith("pred/")]
    assert tables[0][columns].equals(tables[1][columns])


def export_decisions(tmp_path):
    path = tmp_path / "given.json"
    path.write_text(json.dumps(DECISIONS))
    return path


@pytest.mark.slow
def test_int8_quantisation_reports_its_f1_delta(made, tmp_path):
    result = export.run_export(ckpt=made["small"], fmt="onnx", quantize="int8", data=made["data"], gt=made["gt"],
                               calibration=made["data"] / "train" / "images", out=tmp_path / "q.onnx")
    assert (tmp_path / "q.onnx").stat().st_size < 0.4 * made["onnx"].stat().st_size   # same trunk, int8 weights
    assert manifest_of(tmp_path / "q.onnx")["quantization"]["mode"] == "int8"
    assert set(result["int8_scores"]) >= {"composite/f1", "mask/f1", "age/acc"}
    assert result["int8_parity"]["images"] == image_count(made["data"] / "eval" / "images")
    predict(ckpts=[tmp_path / "q.onnx"], data=made["data"], out=tmp_path / "out", **FAST)
    assert (tmp_path / "out" / "submission.csv").is_file()


def test_broken_parity_stops_the_export_and_writes_nothing(made, tmp_path, monkeypatch):
    real = export_onnx.onnx_bytes

    def other_weights(net, cfg, **kw):   # a graph whose age head is off: what a wrong export would produce
        wrong = copy.deepcopy(net)
        with torch.no_grad():
            wrong.heads["age"][-1].bias += torch.tensor([0.0, 0.0, 0.01])
        return real(wrong, cfg, **kw)

    monkeypatch.setattr(export, "onnx_bytes", other_weights)
    with pytest.raises(UserError, match=r"ONNX parity broken: max \|delta prob\| .* \(output age; limit 0.001\).* "
                                        r"nothing written"):
        export.run_export(ckpt=made["small"], fmt="onnx", out=tmp_path / "bad.onnx")
    assert not (tmp_path / "bad.onnx").exists() and not list(tmp_path.glob(".bad.onnx*"))


def test_loading_exports_never_unpickles(made, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("unpickling")

    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    for source in (made["st"], made["onnx"]):
        predict(ckpts=[source], data=made["data"], out=tmp_path / source.name, **FAST)


@pytest.mark.slow
def test_dynamo_exporter(made, tmp_path):
    pytest.importorskip("onnxscript")
    result = export.run_export(ckpt=made["small"], fmt="onnx", exporter="dynamo", out=tmp_path / "d.onnx")
    assert result["parity"]["max_abs_delta"] <= 1e-3
    assert manifest_of(tmp_path / "d.onnx")["exported_with"]["opset"] == 18


# ------------------------------------------------------------------------------------------------ bad input
def _fails(capsys, argv) -> str:
    assert main(argv) == 2
    return error_line(capsys)


def test_bad_exports_are_one_line(made, tmp_path, capsys):
    predict = ["predict", "--data", str(made["data"]), "--out", str(tmp_path / "out"), "--workers", "0"]
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(made["onnx"].read_bytes()[:5000])
    assert "cut.onnx: not a loadable ONNX model" in _fails(capsys, [*predict, "--ckpt", str(cut)])
    noise = tmp_path / "noise.onnx"
    noise.write_bytes(b"not a model at all")
    assert "noise.onnx: not a loadable ONNX model" in _fails(capsys, [*predict, "--ckpt", str(noise)])
    plain = tmp_path / "plain.onnx"
    torch.onnx.export(torch.nn.Linear(2, 2), (torch.ones(1, 2),), str(plain), dynamo=False)
    assert "without multitask metadata" in _fails(capsys, [*predict, "--ckpt", str(plain)])
    folder = tmp_path / "weights_only"
    folder.mkdir()
    shutil.copy(made["st"] / "model.safetensors", folder)
    line = _fails(capsys, [*predict, "--ckpt", str(folder)])
    assert "weights_only: config.json is missing" in line
    lone = tmp_path / "config_only"
    lone.mkdir()
    shutil.copy(made["st"] / "config.json", lone)
    assert "config_only: model.safetensors is missing" in _fails(capsys, [*predict, "--ckpt", str(lone)])
    assert "--backend torch" in _fails(capsys, [*predict, "--ckpt", str(made["onnx"]), "--backend", "torch"])
    export_cmd = ["export", str(made["pt"]), "--out", str(tmp_path / "x.onnx")]
    assert "--quantize int8 calibrates activation ranges on real images: give --data or --calibration" in \
        _fails(capsys, [*export_cmd, "--quantize", "int8"])
    assert "--batch: expected dynamic" in _fails(capsys, [*export_cmd, "--batch", "0"])
    assert "already an ONNX model" in _fails(capsys, ["export", str(made["onnx"])])
    assert not (tmp_path / "x.onnx").exists()


def test_missing_onnxruntime_is_a_one_line_hint(made, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)   # import onnxruntime -> ImportError
    with pytest.raises(UserError, match=r"onnxruntime is not installed; pip install 'multitask\[onnx\]'"):
        predict(ckpts=[made["onnx"]], data=made["data"], out=tmp_path, **FAST)


def test_torch_runs_one_thread_only_while_every_member_is_onnx():
    class Onnx:
        kind = "onnxruntime"

    class Torch:
        kind = "torch"

    before = torch.get_num_threads()
    with backends.glue_threads([Onnx(), Onnx()]):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with backends.glue_threads([Onnx(), Torch()]):
        assert torch.get_num_threads() == before


def test_an_onnx_model_is_known_by_its_content_whatever_its_name(made, tmp_path, capsys):
    """`export --out model` (no .onnx) writes an ONNX file: predict runs it on onnxruntime as it would model.onnx,
    and export takes it for what it is; a checkpoint or a torn ONNX file is not taken for one."""
    named = tmp_path / "model"
    assert main(["export", str(made["small"]), "--out", str(named)]) == 0
    shutil.copyfile(named, tmp_path / "model.onnx")
    for ckpt in (named, tmp_path / "model.onnx"):
        predict(ckpts=[ckpt], data=made["data"], out=tmp_path / f"out-{ckpt.name}", **FAST)
    submissions = [(tmp_path / f"out-{name}" / "submission.csv").read_text() for name in ("model", "model.onnx")]
    assert submissions[0] == submissions[1]
    capsys.readouterr()
    assert main(["export", str(named)]) == 2
    assert error_line(capsys).endswith("model is already an ONNX model; export from its checkpoint (.pt) or run dir")
    torn = tmp_path / "torn"
    torn.write_bytes(named.read_bytes()[:-100])
    assert export_onnx.is_onnx(named) and not export_onnx.is_onnx(torn)
    assert not export_onnx.is_onnx(made["small"]) and not export_onnx.is_onnx(made["st"])


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
    assert code == 2 and files_under(out) == [], message   # refused before anything was written
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
