"""Bad input through the CLI: one line on stderr that says what, where and what would be right; exit code 2; no run
dir, cache or output left half-written. In-process (`multitask.cli.main`) for speed; one subprocess test shows that
no traceback reaches the user and that --debug shows one.

The refusal of a crafted (code-running) pickle is proven at the loader in test_checkpoint.py
(test_crafted_pickle_is_refused_without_running); here only its command-line path is checked.
"""
import builtins
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from multitask.checkpoint import FORMAT, VERSION
from multitask.cli import main
from multitask.data.images import read_image

CONFIG = "configs/quickstart.yaml"


def _base(root, tmp_path) -> list[str]:
    return [f"data.root={root}", "data.synthesize_if_missing=false", "data.image_size=[32,32]", "data.num_workers=0",
            "data.n_folds=4", f"data.cache_dir={tmp_path / 'cache'}", f"output_dir={tmp_path / 'runs'}",
            "train.epochs=1", "train.batch_size=16", "train.max_steps=1", "tracking.wandb.mode=disabled",
            "tracking.progress=false", "seed=0"]


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0][len("error: "):]


@pytest.fixture()
def data(synth_root, tmp_path):
    """A private copy of the synthetic competition data to break, and its first person's folder."""
    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    first = sorted((root / "train" / "images").iterdir())[0]
    return root, first


@pytest.fixture(scope="module")
def trained(synth_root, tmp_path_factory):
    """One finished 1-step run (best.pt + last.pt) for the resume and predict cases."""
    tmp = tmp_path_factory.mktemp("trained")
    assert main(["train", "--config", CONFIG, *_base(synth_root, tmp)]) == 0
    return next((tmp / "runs" / "quickstart").iterdir())


def _train_fails(capsys, tmp_path, args) -> str:
    code = main(["train", "--config", CONFIG, *args])
    message = _error_line(capsys)
    assert code == 2, message
    # nothing half-written: no run dir (not even config.yaml or empty logs), no image cache or temp file
    assert _files(tmp_path / "runs") == [] and _files(tmp_path / "cache") == []
    return message


# ----------------------------------------------------------------------------------------------- the data folder
def _rename(folder: Path, name: str) -> Path:
    target = folder.with_name(name)
    folder.rename(target)
    return target


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _remove(path: Path) -> Path:
    path.unlink()
    return path


def _drop_column(csv: Path, column: str) -> Path:
    pd.read_csv(csv, dtype=str).drop(columns=[column]).to_csv(csv, index=False)
    return csv


DATA_CASES = {
    # case: (break the copy, returning the path the message must name; fragments the message must hold)
    "root missing": (lambda root, first: root / "nowhere",
                     ["data root not found: {}; expected a folder holding train/"]),
    "train.csv missing": (lambda root, first: _remove(root / "train" / "train.csv"),
                          ["{}: train.csv not found; expected columns id, gender, race, age, path"]),
    "train.csv column missing": (lambda root, first: _drop_column(root / "train" / "train.csv", "age"),
                                 ["{}: missing column(s) age; expected id, gender, race, age, path"]),
    "folder name": (lambda root, first: _rename(first, "000001_female_45"),
                    ["{}: folder name does not parse; expected <id>_<gender>_<race>_<age>"]),
    "unknown gender": (lambda root, first: _rename(first, "000001_fmale_Asian_45"),
                       ["{}: unknown gender 'fmale'; expected male or female"]),
    "age not a number": (lambda root, first: _rename(first, "000001_female_Asian_4x"),
                         ["{}: age '4x' is not a non-negative whole number of years"]),
    "negative age": (lambda root, first: _rename(first, "000001_female_Asian_-3"),
                     ["{}: age '-3' is not a non-negative whole number of years"]),
    "empty image": (lambda root, first: _write(first / "mask2.jpg", b""),
                    ["{}: image file is empty (0 bytes); re-copy it or remove it from the data set"]),
    "truncated image": (lambda root, first: _truncate(first / "normal.jpg"),
                        ["{}: truncated JPEG (no end-of-image marker", "re-copy the file"]),
    "not an image": (lambda root, first: _write(first / "mask3.jpg", b"<html>404</html>"),
                     ["{}: not a decodable image (16 bytes); expected JPEG, PNG"]),
    "nothing left by name": (lambda root, first: _rename_all(root, ".bmp"),
                             ["{}: no training images found; expected folders <id>_<gender>_<race>_<age>"]),
}


def _truncate(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[:200])
    return path


def _rename_all(root: Path, suffix: str) -> Path:
    images = root / "train" / "images"
    for path in images.rglob("*.jpg"):
        path.rename(path.with_suffix(suffix))
    return images


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_bad_data_gives_one_line_and_writes_nothing(case, data, tmp_path, capsys):
    root, first = data
    breaker, fragments = DATA_CASES[case]
    named = breaker(root, first)
    message = _train_fails(capsys, tmp_path, _base(root if case != "root missing" else named, tmp_path))
    for fragment in fragments:
        assert fragment.format(named) in message, message


def test_skip_leaves_bad_images_out_and_counts_them(data, tmp_path, capsys):
    root, first = data
    _write(first / "mask2.jpg", b"")
    _write(first / "mask3.jpg", b"not a picture")
    code = main(["train", "--config", CONFIG, *_base(root, tmp_path), "data.on_bad_image=skip"])
    out = re.sub(r"\s+", "", capsys.readouterr().out)   # rich wraps long lines, even inside a path
    assert code == 0
    assert re.sub(r"\s+", "", f"skipped 2 bad image(s) (data.on_bad_image=skip), e.g. {first / 'mask2.jpg'}: image "
                  f"file is empty (0 bytes)") in out
    used = re.search(r"fold0/4:(\d+)train/(\d+)valimages", out)
    assert int(used[1]) + int(used[2]) == 112 - 2


def test_skip_that_leaves_no_image_is_an_error(data, tmp_path, capsys):
    root, _ = data
    for path in (root / "train" / "images").rglob("*.jpg"):
        path.write_bytes(b"")
    message = _train_fails(capsys, tmp_path, [*_base(root, tmp_path), "data.on_bad_image=skip"])
    assert message.startswith("none of the 112 images is readable (data.on_bad_image=skip left nothing to train on)")


def test_odd_but_valid_images_are_converted_and_train(data, tmp_path, capsys):
    """Grayscale, RGBA, 16-bit PNG and an unexpected size just work: read as HxWx3 uint8 RGB, resized by the cache."""
    root, first = data
    rgb = read_image(first / "mask1.jpg")
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    bgra = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA)
    bgra[..., 3] = 90
    deep = (cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR).astype(np.uint16) << 8) | 0x7F
    big = cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), (77, 101))
    for stem, pixels, ext in (("mask1", gray, ".png"), ("mask2", bgra, ".png"), ("mask3", deep, ".png"),
                              ("mask4", big, ".jpg")):
        (first / f"{stem}.jpg").unlink()
        assert cv2.imwrite(str(first / f"{stem}{ext}"), pixels)
    shapes = {stem: read_image(next(first.glob(f"{stem}.*"))) for stem in ("mask1", "mask2", "mask3", "mask4")}
    assert all(im.dtype == np.uint8 and im.shape[2] == 3 for im in shapes.values())
    assert shapes["mask4"].shape == (101, 77, 3)
    np.testing.assert_array_equal(shapes["mask1"][..., 0], gray)          # gray -> R = G = B
    np.testing.assert_array_equal(shapes["mask1"][..., 2], gray)
    np.testing.assert_array_equal(shapes["mask2"], rgb)                   # alpha dropped
    np.testing.assert_array_equal(shapes["mask3"], rgb)                   # 16 bit -> its high byte

    code = main(["train", "--config", CONFIG, *_base(root, tmp_path)])
    out = capsys.readouterr().out
    assert code == 0 and "bad image" not in out and "112 images of 16 people" in " ".join(out.split())


# ----------------------------------------------------------------------------------------------- manifests
@pytest.mark.parametrize("case", ["unknown class", "missing image"])
def test_bad_manifest(case, data, tmp_path, capsys):
    root, first = data
    rows = [{"path": str(p), "mask": "wear", "gender": "female", "age": "<30", "group": "p1"}
            for p in sorted(first.glob("*.jpg"))]
    if case == "unknown class":
        rows[2]["mask"] = "wearing"
    else:
        rows[3]["path"] = "faces/nothere.jpg"
    manifest = tmp_path / "merged.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    message = _train_fails(capsys, tmp_path, [*_base(root, tmp_path), "data.source=manifest",
                                              f"data.manifest={manifest}"])
    if case == "unknown class":
        assert message == (f"{manifest} line 4, column mask: unknown class 'wearing' for head mask; expected one of "
                           f"wear, incorrect, not_wear, an index 0..2, or blank / -1 for unlabelled")
    else:
        assert message.startswith(f"{manifest} line 5: image not found: faces/nothere.jpg (looked at "
                                  f"{tmp_path / 'faces' / 'nothere.jpg'}); paths are relative to the CSV's folder")


# ----------------------------------------------------------------------------------------------- config
CONFIG_CASES = {
    "unknown key": (["train.epoch=3"], "configs/quickstart.yaml: unknown key 'train.epoch' (did you mean epochs"),
    "wrong type": (["train.batch_size=many"], "configs/quickstart.yaml: train.batch_size: expected an integer, got "
                                              "'many'"),
    "out of range": (["train.batch_size=0"], "configs/quickstart.yaml: train.batch_size: 0 is too small; expected "
                                             ">= 1"),
    "unknown loss": (["heads.age.loss={focall: 1.0}"], "heads.age.loss: unknown loss 'focall' (did you mean focal?); "
                                                       "valid: ce, focal, f1"),
    "unknown backbone": (["model.backbone=resnet181"], "model.backbone: unknown timm model 'resnet181'; close "
                                                       "matches: resnet18"),
    "unknown scheduler": (["train.scheduler=cosin"], "configs/quickstart.yaml: train.scheduler: invalid choice "
                                                     "'cosin' (did you mean cosine?); choose from cosine, step"),
    "unknown --heads": (["--heads", "mask,agee"], "configs/quickstart.yaml: train.heads: unknown head 'agee' (did you "
                                                  "mean age"),
    "skip without cache": (["data.on_bad_image=skip", "data.cache=false"], "configs/quickstart.yaml: "
                                                                           "data.on_bad_image=skip needs "
                                                                           "data.cache=true"),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_bad_config(case, synth_root, tmp_path, capsys):
    args, expected = CONFIG_CASES[case]
    message = _train_fails(capsys, tmp_path, [*_base(synth_root, tmp_path), *args])
    assert message.startswith(expected), message


# ----------------------------------------------------------------------------------------------- checkpoints
def test_resume_with_other_heads_is_refused_and_changes_nothing(trained, capsys):
    before = {p.name: p.read_bytes() for p in trained.iterdir() if p.is_file()}
    code = main(["train", "--resume", str(trained), "--heads", "age"])
    message = _error_line(capsys)
    assert code == 2
    assert message.startswith(f"--resume {trained / 'last.pt'}: the checkpoint's heads {{'mask': ['wear', "
                              f"'incorrect', 'not_wear'], 'gender': ['male', 'female'], 'age':")
    assert message.endswith("differ from the config's {'age': ['<30', '30-59', '>=60']}; resume with the same heads "
                            "(or start a new run)")
    assert {p.name: p.read_bytes() for p in trained.iterdir() if p.is_file()} == before


def test_resume_of_a_run_killed_before_its_first_checkpoint(tmp_path, capsys):
    run_dir = tmp_path / "runs" / "quickstart" / "1"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text("name: quickstart\n")
    assert main(["train", "--resume", str(run_dir)]) == 2
    assert _error_line(capsys).startswith(f"--resume {run_dir}: no checkpoint yet (the run stopped before its first "
                                          f"epoch ended")


def test_resume_of_a_finished_run_says_so(trained, capsys):
    code = main(["train", "--resume", str(trained)])
    out = " ".join(capsys.readouterr().out.split())
    assert code == 0 and "nothing to train: this run already finished (epoch 1 of 1)" in out


def test_files_that_are_not_checkpoints(tmp_path, capsys):
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, foreign)
    for path in (text, foreign):
        assert main(["train", "--resume", str(path)]) == 2
        assert _error_line(capsys).startswith(f"{path} is not a multitask checkpoint")
        assert main(["predict", "--ckpt", str(path), "--data", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
        assert _error_line(capsys).startswith(f"{path} is not a multitask checkpoint")
    assert not (tmp_path / "out").exists()


class _CreatesFile:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return builtins.open, (self.path, "w")


def test_code_running_checkpoint_is_refused_on_the_command_line(tmp_path, capsys):
    marker, evil = tmp_path / "pwned.txt", tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "version": VERSION, "model": _CreatesFile(marker)}, evil)
    assert main(["train", "--resume", str(evil)]) == 2
    assert _error_line(capsys).endswith("refusing to load it (it could run code)")
    assert not marker.exists()


def test_info_csv_naming_a_missing_image(trained, synth_root, tmp_path, capsys):
    shutil.copytree(synth_root / "eval", tmp_path / "eval")
    info = tmp_path / "eval" / "info.csv"
    table = pd.read_csv(info, dtype=str)
    pd.concat([table, pd.DataFrame({"ImageID": ["lost.jpg"], "ans": ["0"]})]).to_csv(info, index=False)
    out = tmp_path / "out"
    code = main(["predict", "--ckpt", str(trained), "--data", str(tmp_path), "--out", str(out), "--workers", "0"])
    assert code == 2
    assert _error_line(capsys) == (f"{info}: image 'lost.jpg' not found in {tmp_path / 'eval' / 'images'} "
                                   f"(1 of {len(table) + 1} missing)")
    assert not out.exists()


# ----------------------------------------------------------------------------------------------- what the user sees
def test_no_traceback_without_debug_and_one_with_it(tmp_path):
    env = {**os.environ, "MULTITASK_DEBUG": ""}
    # found deep in training (after torch, the run dir and the trackers are up): still one line, exit code 2
    command = [sys.executable, "-m", "multitask", "train", "--config", CONFIG, f"data.root={tmp_path / 'nowhere'}",
               "data.synthesize_if_missing=false", f"output_dir={tmp_path / 'runs'}"]
    plain = subprocess.run(command, capture_output=True, text=True, timeout=180, env=env)
    assert plain.returncode == 2
    assert plain.stderr == (f"error: data root not found: {tmp_path / 'nowhere'}; expected a folder holding train/ "
                            f"(and eval/)\n")
    assert _files(tmp_path / "runs") == []
    # --debug (before or after the subcommand) shows the traceback instead
    for flag_first in (True, False):
        args = ["train", "--config", CONFIG, "train.epoch=3"]
        args = ["--debug", *args] if flag_first else [*args, "--debug"]
        debug = subprocess.run([sys.executable, "-m", "multitask", *args], capture_output=True, text=True, timeout=180,
                               env=env)
        assert debug.returncode == 1
        assert debug.stderr.startswith("Traceback (most recent call last)")
        assert debug.stderr.strip().splitlines()[-1].startswith(
            "multitask.config.ConfigError: configs/quickstart.yaml: unknown key 'train.epoch'")
