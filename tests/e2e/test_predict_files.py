"""predict against files someone else wrote and folders that held an earlier predict (CPU, seconds).

A file read (checkpoint, export) never says where the tool writes; the output folder is one transaction; inputs are
checked before any work; face boxes count only when they are boxes.
"""
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from helpers import FAST, OneFaceDetector, error_line, make_ckpt, predict

from multitask.cli import main
from multitask.config import ConfigError, from_dict, load_config, to_dict
from multitask.data import faces
from multitask.data.competition import read_competition
from multitask.data.faces import Face, detect_faces, detector_id, plan_faces
from multitask.data.synthetic import write_synthetic
from multitask.export.command import run_export
from multitask.runs.checkpoint import load_checkpoint, save_checkpoint
from multitask.utils.errors import UserError


@pytest.fixture(scope="module")
def world(two_people, tmp_path_factory):
    base = tmp_path_factory.mktemp("round3")
    photos = base / "photos"
    photos.mkdir()
    for image in sorted((two_people / "eval" / "images").iterdir())[:3]:
        shutil.copy(image, photos / image.name)
    return {"base": base, "data": two_people, "photos": photos, "gt": two_people / "eval" / "gt.csv",
            "resnet": make_ckpt(base / "resnet.pt", seed=1)}


def _nothing_under(folder: Path) -> bool:
    return not folder.exists()


# ------------------------------------------------------------------------------------------- files never steer writes
def test_a_crafted_checkpoint_and_export_write_nowhere_they_name(world, tmp_path, monkeypatch):
    """A .pt and a safetensors export whose configs name another cache_dir (and output_dir): predict writes the
    face boxes to the user's cache (the default, relative to the working folder, or --cache-dir), never there."""
    monkeypatch.setattr(faces, "load_detector", OneFaceDetector)
    monkeypatch.chdir(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    crafted = make_ckpt(tmp_path / "crafted.pt", seed=2, overrides=["data.crop=face", f"data.cache_dir={elsewhere}/c",
                                                                    f"output_dir={elsewhere}/runs"])
    predict(ckpts=[crafted], data=world["photos"], out=tmp_path / "a", **FAST)
    assert _nothing_under(elsewhere)
    assert (tmp_path / ".cache" / "images" / f"faces-{detector_id()}.json").is_file()
    export = tmp_path / "deploy"
    run_export(ckpt=crafted, fmt="safetensors", out=export)
    assert json.loads((export / "config.json").read_text())["config"]["data"]["cache_dir"] == f"{elsewhere}/c"
    mine = tmp_path / "mine"
    assert main(["predict", "--ckpt", str(export), "--data", str(world["photos"]), "--out", str(tmp_path / "b"),
                 "--cache-dir", str(mine), "--workers", "0", "--device", "cpu", "--batch-size", "8"]) == 0
    assert _nothing_under(elsewhere)
    assert (mine / f"faces-{detector_id()}.json").is_file()


def test_a_crafted_onnx_export_writes_nowhere_it_names(world, tmp_path, monkeypatch):
    monkeypatch.setattr(faces, "load_detector", OneFaceDetector)
    monkeypatch.chdir(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    crafted = make_ckpt(tmp_path / "crafted.pt", seed=2, overrides=["data.crop=face", f"data.cache_dir={elsewhere}"])
    run_export(ckpt=crafted, fmt="onnx", out=tmp_path / "crafted.onnx")
    predict(ckpts=[tmp_path / "crafted.onnx"], data=world["photos"], out=tmp_path / "a", **FAST)
    assert _nothing_under(elsewhere)
    assert (tmp_path / ".cache" / "images" / f"faces-{detector_id()}.json").is_file()


def test_an_embedded_image_size_too_large_is_one_line(world, tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"data\.image_size: expected \[height, width\], each in 8\.\.4096, got "
                                          r"\[30000, 30000\]"):
        load_config(None, ["data.image_size=[30000,30000]"])
    ckpt = load_checkpoint(world["resnet"])
    ckpt["config"]["data"]["image_size"] = [30000, 30000]
    save_checkpoint(tmp_path / "huge.pt", ckpt)
    code = main(["predict", "--ckpt", str(tmp_path / "huge.pt"), "--data", str(world["photos"]), "--out",
                 str(tmp_path / "o"), "--workers", "0", "--device", "cpu"])
    assert code == 2 and "data.image_size" in error_line(capsys)
    assert not (tmp_path / "o").exists()
    raw = to_dict(load_config(None, []))
    raw["data"]["image_size"] = [4096, 4096]   # the largest allowed
    assert from_dict(raw).data.image_size == [4096, 4096]


# ------------------------------------------------------------------------------------------- the output folder
def test_an_out_that_is_or_holds_an_input_is_refused(world, tmp_path, capsys):
    x = tmp_path / "x"
    predict(ckpts=[world["resnet"]], data=world["photos"], out=x, **FAST)
    before = (x / "predictions.csv").read_bytes()
    code = main(["predict", "--ckpt", str(world["resnet"]), "--data", str(x / "predictions.csv"), "--out", str(x),
                 "--workers", "0", "--device", "cpu"])
    assert code == 2
    assert error_line(capsys) == (f"--out {x}: holds the input --data {x / 'predictions.csv'}; predict replaces the "
                                  f"files in --out, so give an output folder that holds none of its inputs")
    assert (x / "predictions.csv").read_bytes() == before
    with pytest.raises(UserError, match=r"is the input --data"):
        predict(ckpts=[world["resnet"]], data=world["photos"], out=world["photos"], **FAST)
    (tmp_path / "models").mkdir()
    shutil.copy(world["resnet"], tmp_path / "models" / "r.pt")
    with pytest.raises(UserError, match=r"holds the input --ckpt .*r\.pt"):
        predict(ckpts=[tmp_path / "models" / "r.pt"], data=world["photos"], out=tmp_path, **FAST)
    with pytest.raises(UserError, match=r"holds the input --gt"):
        predict(ckpts=[world["resnet"]], data=world["photos"], out=world["data"] / "eval", gt=world["gt"], **FAST)


def test_a_failed_predict_leaves_the_previous_outputs_and_a_new_one_removes_stale_kinds(world, tmp_path):
    out = tmp_path / "out"
    predict(ckpts=[world["resnet"]], data=world["data"], out=out, gt=world["gt"], **FAST)
    kinds = {"submission.csv", "predictions.csv", "scores.json", "predict.json"}
    assert {p.name for p in out.iterdir()} == kinds
    good = {name: (out / name).read_bytes() for name in kinds}
    record = json.loads(good["predict.json"])
    assert list(record["checkpoints"]) == [str(world["resnet"])] and record["data"] == str(world["data"])
    assert record["gt"] == str(world["gt"]) and record["images"] == 14 and "made" in record
    assert sorted(record["outputs"]) == sorted(kinds)
    cut = tmp_path / "cut"
    cut.mkdir()
    shutil.copy(next(world["photos"].iterdir()), cut / "a.jpg")
    (cut / "b.jpg").write_bytes((cut / "a.jpg").read_bytes()[:200])   # fails mid-forward
    with pytest.raises(UserError, match="truncated JPEG"):
        predict(ckpts=[world["resnet"]], data=cut, out=out, **FAST)
    assert {p.name for p in out.iterdir()} == kinds
    assert {name: (out / name).read_bytes() for name in kinds} == good
    other = make_ckpt(tmp_path / "other.pt", seed=5, overrides=["train.heads=[age]"])
    (out / ".predict-killed.tmp").mkdir()   # what a kill -9 mid-predict leaves: the next predict removes it
    predict(ckpts=[other], data=world["photos"], out=out, **FAST)   # no truth, no composite
    assert {p.name for p in out.iterdir()} == {"predictions.csv", "predict.json"}
    assert list(json.loads((out / "predict.json").read_text())["checkpoints"]) == [str(other)]
    assert len(pd.read_csv(out / "predictions.csv")) == 3


# ------------------------------------------------------------------------------------------- inputs checked first
def test_a_manifest_listing_an_image_twice_is_refused_naming_its_line(world, tmp_path, capsys):
    images = sorted(world["photos"].iterdir())
    pd.DataFrame({"path": [str(images[0]), str(images[1]), str(images[0])],
                  "mask": ["wear", "", "2"]}).to_csv(tmp_path / "m.csv", index=False)
    code = main(["predict", "--ckpt", str(world["resnet"]), "--data", str(tmp_path / "m.csv"), "--out",
                 str(tmp_path / "o"), "--workers", "0", "--device", "cpu"])
    assert code == 2
    assert error_line(capsys) == (f"{tmp_path / 'm.csv'} line 4: image {images[0]} is listed again (first at "
                                  f"line 2); list each image once")
    assert not (tmp_path / "o").exists()


def test_a_manifest_of_paths_alone_predicts_unlabelled_images(world, tmp_path):
    shutil.copytree(world["photos"], tmp_path / "photos")
    images = sorted((tmp_path / "photos").iterdir())
    pd.DataFrame({"path": [f"photos/{p.name}" for p in images]}).to_csv(tmp_path / "paths.csv", index=False)
    result = predict(ckpts=[world["resnet"]], data=tmp_path / "paths.csv", out=tmp_path / "o", **FAST)
    assert "composite/f1" not in result
    assert {p.name for p in (tmp_path / "o").iterdir()} == {"submission.csv", "predictions.csv", "predict.json"}
    assert len(pd.read_csv(tmp_path / "o" / "submission.csv")) == len(images)


# ------------------------------------------------------------------------------------------- face boxes
def test_face_boxes_are_clipped_or_refused_and_counted_honestly():
    assert faces.clean_box((-0.1, 0.2, 0.5, 1.3)) == (0.0, 0.2, 0.5, 1.0)          # reaches past the border: clipped
    for bad in [(0.5, 0.2, 0.3, 0.6), (0.2, 0.2, 0.2, 0.6), (float("nan"), 0, 1, 1), (1.2, 1.2, 1.5, 1.5),
                (-0.5, 0.1, -0.1, 0.4), (0.1, 0.2), "abcd", None, (0.1, 0.2, float("inf"), 0.5)]:
        assert faces.clean_box(bad) is None, bad
    found = [Face(400, 300, (0.2, 0.2, 0.6, 0.7)), Face(400, 300, (-0.1, 0.1, 0.5, 0.6)),
             Face(400, 300, (0.6, 0.2, 0.3, 0.6)), Face(400, 300, (float("nan"),) * 4),
             Face(400, 300, (0.3, 0.3, 0.3, 0.3)), Face(400, 300, (1.5, 1.5, 2.0, 2.0))]
    plan = plan_faces(found)
    assert plan.source == ["face", "face", "fallback", "fallback", "fallback", "fallback"]
    assert plan.summary() == "face found in 33.3 % of 6 photos; 4 used the fallback"
    assert np.isfinite(plan.anchors).all() and (plan.anchors >= 0).all() and (plan.anchors <= 1).all()
    assert (plan.anchors[:, 2] > plan.anchors[:, 0]).all() and (plan.anchors[:, 3] > plan.anchors[:, 1]).all()


def test_bad_face_store_entries_are_detected_again(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(5):
        paths.append(str(tmp_path / f"{i}.png"))
        cv2.imwrite(paths[-1], rng.integers(0, 255, (60, 48, 3), dtype=np.uint8))
    store = tmp_path / "c" / f"faces-{detector_id()}.json"
    store.parent.mkdir()
    entries = [[0.1, 0.2], "abcd", [60, 48, [0.5, 0.5, 0.2, 0.2]], [60, 48, [float("nan")] * 4],
               [60, 48, [0.1, 0.1, 0.9, 0.9]]]
    store.write_text(json.dumps({"detector": detector_id(),
                                 "faces": {faces.content_key(p): e for p, e in zip(paths, entries)}}))
    OneFaceDetector.calls = 0
    found = detect_faces(paths, cache_dir=tmp_path / "c", workers=1, detector_factory=OneFaceDetector)
    assert OneFaceDetector.calls == 4                 # the four bad entries, not the good one
    assert all(f is not None and f.box is not None for f in found)
    assert found[4].box == (0.1, 0.1, 0.9, 0.9)


def test_a_folder_age_too_large_is_one_line(tmp_path):
    write_synthetic(tmp_path / "d", people=2, width=32, height=40, seed=3)
    first = sorted((tmp_path / "d" / "train" / "images").iterdir())[0]
    name = first.name.rsplit("_", 1)[0] + "_99999999999999999999"
    first.rename(first.parent / name)
    with pytest.raises(UserError, match=rf"{name}: age '99999999999999999999' is not a non-negative whole number "
                                        r"of years up to 150"):
        read_competition(tmp_path / "d")


def test_a_predictions_table_read_back_as_data_predicts_under_its_own_ids(world, tmp_path):
    """The issue's `--data X/predictions.csv`, into another folder: its image_id column names the images."""
    predict(ckpts=[world["resnet"]], data=world["data"], out=tmp_path / "x", **FAST)
    first = pd.read_csv(tmp_path / "x" / "predictions.csv")
    predict(ckpts=[world["resnet"]], data=tmp_path / "x" / "predictions.csv", out=tmp_path / "y", **FAST)
    again = pd.read_csv(tmp_path / "y" / "predictions.csv")
    assert list(again["image_id"]) == list(first["image_id"])
    assert np.allclose(again["prob/mask/wear"], first["prob/mask/wear"])
