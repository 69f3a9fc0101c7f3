"""Class activation maps: they point where the label is decided, `explain` writes one overlay per photo and head,
a model without a spatial feature map is one line, and the report shows where each head looks."""
import json

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from helpers import error_line, make_ckpt

from multitask.analysis.cam import BAND, feature_layer, head_maps
from multitask.analysis.report.build import build_report
from multitask.analysis.report.cam import input_box
from multitask.cli import main
from multitask.data.faces import Cropper, Face, detect_faces
from multitask.heads import HeadSpec
from multitask.model.net import MultiHeadNet
from multitask.runs.run_dir import OOF
from multitask.train import run_training

SIZE, MARK = 64, 16


def marked(n: int, generator, *, tl=None, br=None):
    """Noise photos with a white square in the top-left and/or bottom-right corner: the only thing that decides
    head tl's label (square top-left?) and head br's (square bottom-right?)."""
    x = torch.randint(60, 190, (n, 3, SIZE, SIZE), generator=generator, dtype=torch.uint8)
    a = torch.randint(0, 2, (n,), generator=generator) if tl is None else torch.full((n,), tl)
    b = torch.randint(0, 2, (n,), generator=generator) if br is None else torch.full((n,), br)
    x[a == 1, :, :MARK, :MARK] = 255
    x[b == 1, :, -MARK:, -MARK:] = 255
    return x, a, b


def test_each_head_looks_at_the_corner_that_decides_its_label():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    net = MultiHeadNet(backbone="test_resnet", heads=[HeadSpec(classes=["no", "yes"], name="tl"),
                                                      HeadSpec(classes=["no", "yes"], name="br")])
    optimizer = torch.optim.Adam(net.parameters(), 3e-3)
    for _ in range(40):
        x, a, b = marked(16, generator)
        out = net(x.float())
        loss = torch.nn.functional.cross_entropy(out["tl"], a) + torch.nn.functional.cross_entropy(out["br"], b)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    net.eval()
    x, _, _ = marked(8, generator, tl=1, br=1)   # both squares: only the head decides which corner matters
    layer = feature_layer(net, (SIZE, SIZE))
    half = SIZE // 2
    corners = {"tl": (slice(0, half), slice(0, half)), "br": (slice(half, None), slice(half, None))}
    for head, other in (("tl", "br"), ("br", "tl")):
        maps, probs = head_maps(net, head, x, layer=layer)
        assert (probs.argmax(1) == 1).all(), f"head {head} did not learn its corner"
        mass = {k: maps[:, rows, cols].sum((1, 2)) / maps.sum((1, 2)) for k, (rows, cols) in corners.items()}
        # a quarter of the photo holds more than half of the map, on every photo, and far more than the other corner
        assert (mass[head] > 0.5).all() and (mass[head] > 3 * mass[other]).all(), (head, mass)


def eval_photos(root, n=2):
    return sorted(str(p) for p in (root / "eval" / "images").glob("*.jpg"))[:n]


def test_explain_writes_one_overlay_per_photo_and_head(synth_root, tmp_path):
    ckpt = make_ckpt(tmp_path / "m.pt", size=(64, 48))       # H 64, W 48: a 2x2 map of test_resnet
    photos = eval_photos(synth_root)
    out = tmp_path / "explain"
    assert main(["explain", "--ckpt", str(ckpt), *photos, "--out", str(out), "--cache-dir", str(tmp_path / "c")]) == 0
    index = pd.read_csv(out / "explain.csv")
    assert len(index) == len(photos) * 3 and set(index["head"]) == {"mask", "gender", "age"}
    assert sorted(p.name for p in out.glob("*.png")) == sorted(index["file"])
    for file in index["file"]:
        image = cv2.imread(str(out / file))
        assert image.shape == (64 * 4 + BAND, 48 * 4, 3)    # the input enlarged 4 times, the caption band above
    assert ((index["probability"] > 0) & (index["probability"] <= 1)).all()

    assert main(["explain", "--ckpt", str(ckpt), photos[0], "--head", "age", "--method", "gradcam++", "--out",
                 str(tmp_path / "age")]) == 0
    assert [p.name for p in (tmp_path / "age").glob("*.png")] == [f"{eval_photos(synth_root, 1)[0].split('/')[-1][:-4]}"
                                                                   "_age.png"]


@pytest.mark.parametrize("kind", ["vit", "onnx", "1x1"])
def test_no_spatial_feature_map_is_one_line(kind, synth_root, tmp_path, capsys):
    if kind == "vit":
        ckpt, expected = make_ckpt(tmp_path / "vit.pt", backbone="test_vit", size=(160, 160)), "not a 4-d feature map"
    elif kind == "onnx":
        ckpt, expected = tmp_path / "model.onnx", "ONNX model has no gradients"
        ckpt.write_bytes(b"not read")
    else:
        ckpt, expected = make_ckpt(tmp_path / "small.pt", size=(32, 32)), "1x1"
    code = main(["explain", "--ckpt", str(ckpt), *eval_photos(synth_root, 1), "--out", str(tmp_path / "out")])
    assert code == 2
    assert expected in error_line(capsys)
    assert not (tmp_path / "out").exists()


class BoxedDetector:
    """Finds one face in the middle of every photo (the tiny synthetic faces are too small for MTCNN)."""

    def detect_faces(self, image):
        h, w = image.shape[:2]
        return [{"box": [w // 4, h // 4, w // 2, h // 2], "confidence": 0.99}]


def test_report_shows_where_each_head_looks(tiny_cfg, tmp_path):
    cfg = tiny_cfg("data.image_size=[64,64]", "train.batch_size=32")
    run_dir = run_training(cfg)
    oof = pd.read_csv(run_dir / OOF)
    cache = tmp_path / "cache"
    detect_faces(oof["path"].tolist(), cache_dir=cache, workers=1, detector_factory=BoxedDetector)
    out = build_report(run_dir=run_dir, cam_photos=6, cache_dir=cache)
    numbers = json.loads((out / "report.json").read_text())["cam"]
    html = (out / "report.html").read_text()
    assert "Where each head looks" in html and "share outside the face box" in html and "spread evenly" in html
    assert set(numbers["heads"]) == {"mask", "gender", "age"}
    # a head one epoch of training left undecided can have only empty maps (no evidence for its class anywhere)
    assert sum(head["empty_maps"] for head in numbers["heads"].values()) < 18
    for head in numbers["heads"].values():
        assert head["photos"] == 6 and head["with_face"] == 6
        # the detector's box is the middle quarter of every photo: a map spread evenly puts 3/4 outside it
        assert head["area_outside"] == pytest.approx(0.75, abs=0.02) or head["empty_maps"] == 6
        if head["empty_maps"] == 6:
            continue
        assert 0 < head["outside_face"] < 1
        labelled = {c: v for c, v in head["classes"].items() if v["photos"]}
        assert labelled and all(0 <= v["outside_face"] <= 1 for v in labelled.values())
    assert numbers["computed"] == 18 and numbers["cached"] == 0
    again = json.loads((build_report(run_dir=run_dir, cam_photos=6, cache_dir=cache) / "report.json").read_text())
    assert again["cam"]["computed"] == 0 and again["cam"]["cached"] == 18
    for name, head in numbers["heads"].items():   # the same maps, kept as float16
        if head["outside_face"] is not None:
            assert again["cam"]["heads"][name]["outside_face"] == pytest.approx(head["outside_face"], abs=1e-3)


def test_cam_photos_0_leaves_the_section_out(tiny_cfg, tmp_path):
    run_dir = run_training(tiny_cfg("data.image_size=[64,64]"))
    out = build_report(run_dir=run_dir, cam_photos=0)
    assert "cam" not in json.loads((out / "report.json").read_text())
    assert "Where each head looks" not in (out / "report.html").read_text()


def test_a_two_source_run_is_explained_per_source(tiny_cfg, synth_root, tmp_path):
    """Each row cut as its own source's photos were (comp: centre crop, extra: whole), shares per source."""
    gt = pd.read_csv(synth_root / "eval" / "gt.csv", dtype=str)
    manifest = tmp_path / "extra.csv"
    pd.DataFrame({"path": [str(synth_root / "eval" / "images" / i) for i in gt["ImageID"]], "mask": gt["mask"],
                  "gender": gt["gender"], "age": gt["age"], "group": gt["group"]}).to_csv(manifest, index=False)
    run_dir = run_training(tiny_cfg("data.image_size=[64,64]", "data.sources.comp.kind=competition",
                                    f"data.sources.comp.root={synth_root}", "data.sources.comp.crop=center",
                                    "data.sources.extra.kind=manifest", f"data.sources.extra.path={manifest}"))
    cache = tmp_path / "faces"
    detect_faces(pd.read_csv(run_dir / OOF)["path"].tolist(), cache_dir=cache, workers=1,
                 detector_factory=BoxedDetector)
    numbers = json.loads((build_report(run_dir=run_dir, cam_photos=8, cache_dir=cache) / "report.json").read_text())
    mask = numbers["cam"]["heads"]["mask"]
    assert set(mask["sources"]) == {"comp", "extra"} and mask["with_face"] == 8
    assert all(0 < c["outside_face"] < 1 for s in mask["sources"].values() for c in s.values() if c["with_face"])


def test_the_face_box_is_moved_into_the_frame_the_model_saw():
    face = Face(height=40, width=32, box=(0.25, 0.25, 0.75, 0.75))      # pixels x 8..24, y 10..30
    crop = Cropper(mode="center", margin=0.0, aspect=1.0)                # region y 7..33, x 3..29 of the photo
    assert crop.region(0, 40, 32) == (7, 33, 3, 29)
    assert input_box(face, crop, 0) == pytest.approx((5 / 26, 3 / 26, 21 / 26, 23 / 26), abs=1e-4)
    assert input_box(face, None, 0) == face.box and input_box(Face(40, 32, None), crop, 0) is None


def test_the_even_spread_bar_is_the_frame_outside_the_box_clipped_to_the_frame():
    from multitask.analysis.cam import area_outside, share_outside

    assert area_outside((0.25, 0.25, 0.75, 0.75)) == pytest.approx(0.75)
    assert area_outside((-0.1, 0.0, 0.5, 1.2)) == pytest.approx(0.5)
    flat = np.ones((8, 8))
    assert share_outside(flat, (0.25, 0.25, 0.75, 0.75)) == pytest.approx(area_outside((0.25, 0.25, 0.75, 0.75)))
