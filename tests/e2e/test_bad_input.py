"""Bad input through the CLI: one line on stderr that says what, where and what would be right; exit code 2; no run
dir, cache or output left half-written. In-process (`multitask.cli.main`) for speed; one subprocess test shows that
no traceback reaches the user and that --debug shows one.

The refusal of a crafted (code-running) pickle is proven at the loader in test_checkpoint.py
(test_crafted_pickle_is_refused_without_running); here only its command-line path is checked.
"""
import builtins
import json
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
import yaml
from helpers import LR_SPACE, QUICKSTART, TINY_IMAGES, TINY_PEOPLE, Commands, error_line, files_under, tiny_overrides

from multitask.cli import main
from multitask.config import load_config
from multitask.data.images import read_image
from multitask.runs.checkpoint import FORMAT, VERSION, load_checkpoint

CONFIG = "configs/quickstart.yaml"


def _base(root, tmp_path) -> list[str]:
    return tiny_overrides(root, tmp_path, "train.max_steps=1")


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
    message = error_line(capsys)
    assert code == 2, message
    # nothing half-written: no run dir (not even config.yaml or empty logs), no image cache or temp file
    assert files_under(tmp_path / "runs") == [] and files_under(tmp_path / "cache") == []
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
    assert int(used[1]) + int(used[2]) == TINY_IMAGES - 2


def test_skip_that_leaves_no_image_is_an_error(data, tmp_path, capsys):
    root, _ = data
    for path in (root / "train" / "images").rglob("*.jpg"):
        path.write_bytes(b"")
    message = _train_fails(capsys, tmp_path, [*_base(root, tmp_path), "data.on_bad_image=skip"])
    assert message.startswith(f"none of the {TINY_IMAGES} images is readable (data.on_bad_image=skip left nothing to "
                              f"train on)")


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
    assert code == 0 and "bad image" not in out
    assert f"{TINY_IMAGES} images of {TINY_PEOPLE} people" in " ".join(out.split())


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
    "unknown loss": (["heads.age.loss={focall: 1.0}"], "configs/quickstart.yaml: heads.age.loss: unknown loss 'focall' "
                                                       "(did you mean focal?); choose from ce, focal, f1, ldl, "
                                                       "l1_years"),
    "unknown backbone": (["model.backbone=resnet181"], "model.backbone: unknown timm model 'resnet181'; close "
                                                       "matches: resnet18"),
    "unknown scheduler": (["train.scheduler=cosin"], "configs/quickstart.yaml: train.scheduler: invalid choice "
                                                     "'cosin' (did you mean cosine?); choose from cosine, tanh, poly"),
    "unknown --heads": (["--heads", "mask,agee"], "configs/quickstart.yaml: train.heads: unknown head 'agee' (did you "
                                                  "mean age"),
    "unknown crop": (["data.crop=faces"], "configs/quickstart.yaml: data.crop: invalid choice 'faces' (did you mean "
                                          "face?); choose from none, center, face"),
    "negative crop margin": (["data.crop_margin=-0.1"], "configs/quickstart.yaml: data.crop_margin: -0.1 is out of "
                                                        "range; expected >= 0"),
    "skip without cache": (["data.on_bad_image=skip", "data.cache=false"], "configs/quickstart.yaml: "
                                                                           "data.on_bad_image=skip needs "
                                                                           "data.cache=true"),
    # checked once, at the config: the losses and weightings take them as given
    "class weights by a word": (["heads.age.class_weights=balanced"], "configs/quickstart.yaml: "
                                "heads.age.class_weights: expected 'auto' or a list, got 'balanced'"),
    "class weights too few": (["heads.age.class_weights=[1, 2]"], "configs/quickstart.yaml: heads.age.class_weights: "
                                                                  "need 3 values, got 2"),
    "negative class weight": (["heads.age.class_weights=[1, -2, 1]"], "configs/quickstart.yaml: "
                                                                      "heads.age.class_weights[1]: -2.0 is out of "
                                                                      "range; expected >= 0"),
    "negative cagrad_c": (["train.loss_weighting=cagrad", "train.cagrad_c=-0.5"], "configs/quickstart.yaml: "
                                                                                  "train.cagrad_c: -0.5 is out of "
                                                                                  "range; expected >= 0"),
    "zero dwa temperature": (["train.loss_weighting=dwa", "train.dwa_temperature=0"], "configs/quickstart.yaml: "
                                                                                     "train.dwa_temperature: 0.0 is "
                                                                                     "out of range; expected > 0"),
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
    message = error_line(capsys)
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
    assert error_line(capsys).startswith(f"--resume {run_dir}: no checkpoint yet (the run stopped before its first "
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
        assert error_line(capsys).startswith(f"{path} is not a multitask checkpoint")
        assert main(["predict", "--ckpt", str(path), "--data", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
        assert error_line(capsys).startswith(f"{path} is not a multitask checkpoint")
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
    assert error_line(capsys).endswith("refusing to load it (it could run code)")
    assert not marker.exists()


def test_info_csv_naming_a_missing_image(trained, synth_root, tmp_path, capsys):
    shutil.copytree(synth_root / "eval", tmp_path / "eval")
    info = tmp_path / "eval" / "info.csv"
    table = pd.read_csv(info, dtype=str)
    pd.concat([table, pd.DataFrame({"ImageID": ["lost.jpg"], "ans": ["0"]})]).to_csv(info, index=False)
    out = tmp_path / "out"
    code = main(["predict", "--ckpt", str(trained), "--data", str(tmp_path), "--out", str(out), "--workers", "0"])
    assert code == 2
    assert error_line(capsys) == (f"{info}: image 'lost.jpg' not found in {tmp_path / 'eval' / 'images'} "
                                   f"(1 of {len(table) + 1} missing)")
    assert not out.exists()


# ----------------------------------------------------------------------------------------------- what the user sees
@pytest.mark.slow
def test_no_traceback_without_debug_and_one_with_it(tmp_path):
    env = {**os.environ, "MULTITASK_DEBUG": ""}
    # found deep in training (after torch, the run dir and the trackers are up): still one line, exit code 2
    command = [sys.executable, "-m", "multitask", "train", "--config", CONFIG, f"data.root={tmp_path / 'nowhere'}",
               "data.synthesize_if_missing=false", f"output_dir={tmp_path / 'runs'}"]
    plain = subprocess.run(command, capture_output=True, text=True, timeout=180, env=env)
    assert plain.returncode == 2
    assert plain.stderr == (f"error: data root not found: {tmp_path / 'nowhere'}; expected a folder holding train/ "
                            f"(and eval/)\n")
    assert files_under(tmp_path / "runs") == []
    # --debug (before or after the subcommand) shows the traceback instead
    for flag_first in (True, False):
        args = ["train", "--config", CONFIG, "train.epoch=3"]
        args = ["--debug", *args] if flag_first else [*args, "--debug"]
        debug = subprocess.run([sys.executable, "-m", "multitask", *args], capture_output=True, text=True, timeout=180,
                               env=env)
        assert debug.returncode == 1
        assert debug.stderr.startswith("Traceback (most recent call last)")
        assert debug.stderr.strip().splitlines()[-1].startswith(
            "multitask.config.build.ConfigError: configs/quickstart.yaml: unknown key 'train.epoch'")


# ----------------------------------------------------------------------------------------------- the red-team pass
# Every contract break a red-team pass found (113 bad inputs and faults), in one table: how to make the input, the
# exit code, and a fragment of the one error line (or, for exit 0, of the printed output). Each row failed before
# its fix. `t` is a _Setup: a private tmp_path, the synthetic data, monkeypatch and the shared trained run.
class _Setup:
    def __init__(self, tmp_path, synth_root, trained, monkeypatch):
        self.tmp, self.root, self.trained, self.monkeypatch = tmp_path, synth_root, trained, monkeypatch
        self.cleanups: list = []

    def train(self, *extra, root=None) -> list[str]:
        return ["train", "--config", CONFIG, *_base(root or self.root, self.tmp), *extra]

    def data(self) -> tuple[Path, Path]:
        root = self.tmp / "data"
        shutil.copytree(self.root, root)
        first = sorted((root / "train" / "images").iterdir())[0]
        self.first = first.name
        return root, first

    def run_copy(self) -> Path:
        run = self.tmp / "runs" / "quickstart" / "1"
        shutil.copytree(self.trained, run)
        return run


def _disk_full_at_second_last_pt(t: _Setup) -> list[str]:
    """torch's zip writer on a full disk: a RuntimeError without errno, after the first last.pt was written."""
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if "optimizer" in obj and list((t.tmp / "runs").rglob("last.pt")):
            t.monkeypatch.setattr(os, "statvfs", lambda path: os.statvfs_result((4096, 4096, 10, 0, 0, 10, 0, 0, 0,
                                                                                  255)))
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 4160 vs 4048")
        return real_save(obj, f, *args, **kwargs)
    t.monkeypatch.setattr(torch, "save", save)
    return t.train("train.max_steps=2", "train.save_every_steps=1")


def _previous_last_pt_intact(t: _Setup, out: str, caught) -> None:
    last = load_checkpoint(next((t.tmp / "runs").rglob("last.pt")))
    assert last["step"] == 1 and not list((t.tmp / "runs").rglob(".*.tmp"))


def _oof_without_a_class(t: _Setup) -> list[str]:
    run = t.run_copy()
    pd.read_csv(run / "oof.csv").drop(columns=["prob/age/>=60"]).to_csv(run / "oof.csv", index=False)
    return ["report", str(run)]


def _predictions_without_a_class(t: _Setup) -> list[str]:
    table = pd.read_csv(t.trained / "oof.csv").drop(columns=["prob/age/>=60"])
    table.loc[0, ["pred/age", "true/age"]] = 2    # an image that is >=60, predicted >=60
    table.to_csv(t.tmp / "predictions.csv", index=False)
    return ["report", "--pred", str(t.tmp / "predictions.csv")]


def _only_age_trained(t: _Setup, out: str, caught) -> None:
    assert load_checkpoint(next((t.tmp / "runs").rglob("last.pt")))["trained_heads"] == ["age"]


def _latin1_config(t: _Setup) -> list[str]:
    config = t.tmp / "latin1.yaml"
    config.write_bytes(Path(CONFIG).read_bytes() + "# r\xe9sum\xe9 of the settings\n".encode("latin-1"))
    return ["train", "--config", str(config), *_base(t.root, t.tmp)]


def _folder_age(t: _Setup, age: str) -> list[str]:
    root, first = t.data()
    _rename(first, "000001_female_Asian_" + age)
    return t.train(root=root)


def _label_fix_age(t: _Setup) -> list[str]:
    fixes = t.tmp / "fixes.csv"
    fixes.write_text("id,field,value\n000001,age,\u00b25\n", encoding="utf-8")
    return t.train(f"data.label_fixes={fixes}")


def _odd_run_folder(t: _Setup) -> list[str]:
    (t.tmp / "runs" / "quickstart" / "\u00b2").mkdir(parents=True)
    return t.train()


def _numbered_run_made(t: _Setup, out: str, caught) -> None:
    assert (t.tmp / "runs" / "quickstart" / "1" / "last.pt").is_file()


def _resumed_config_is_what_ran(t: _Setup, out: str, caught) -> None:

    run = t.tmp / "runs" / "quickstart" / "1"
    ckpt = load_checkpoint(run / "last.pt")
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert ckpt["config"] == saved and saved["train"]["epochs"] == 2 and ckpt["step"] == 2
    assert ckpt["scheduler"]["impl"]["base_values"][0] == saved["train"]["lr"] == 0.002


def _age_unlabelled_in_validation(t: _Setup) -> list[str]:
    """A merged manifest where only one person has an age label, and a fold whose validation people have none."""
    from multitask.data.sources import rows_and_folds

    rows = []
    for folder in sorted((t.root / "train" / "images").iterdir()):
        pid, gender, _, years = folder.name.rsplit("_", 3)
        age = ("<30" if int(years) < 30 else "30-59" if int(years) < 60 else ">=60") if not rows else ""
        for image in sorted(folder.glob("*.jpg")):
            mask = "wear" if image.stem.startswith("mask") else "incorrect" if "incorrect" in image.stem else \
                "not_wear"
            rows.append({"path": str(image), "mask": mask, "gender": gender, "age": age, "group": pid})
    manifest = t.tmp / "merged.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    args = [*_base(t.root, t.tmp), "data.source=manifest", f"data.manifest={manifest}"]
    cfg = load_config(CONFIG, args)
    _, frame = rows_and_folds(cfg)
    labelled_fold = frame.loc[frame["age"].notna(), "fold"].iloc[0]
    return ["train", "--config", CONFIG, *args, f"data.fold={(labelled_fold + 1) % 4}"]


def _bug_mid_epoch(t: _Setup) -> list[str]:
    from multitask.model.net import MultiHeadNet

    def broken(self, x):
        raise RuntimeError("boom")
    t.monkeypatch.setattr(MultiHeadNet, "forward", broken)
    return t.train()


class _RunsCommand:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _blocked_module_pickle(t: _Setup) -> list[str]:
    torch.save({"format": FORMAT, "version": VERSION, "model": _RunsCommand(t.tmp / "pwned")}, t.tmp / "evil.pt")
    return ["train", "--resume", str(t.tmp / "evil.pt")]


def _never_suggests_unsafe_loading(t: _Setup, out: str, caught) -> None:
    assert not (t.tmp / "pwned").exists()
    assert not [w for w in caught if "torch" in str(w.filename)], [str(w.message) for w in caught]


def _raw_pickle(t: _Setup) -> list[str]:
    import pickle

    with open(t.tmp / "raw.pt", "wb") as f:
        pickle.dump({"format": FORMAT, "weights": [1.0, 2.0]}, f, protocol=4)
    return ["train", "--resume", str(t.tmp / "raw.pt")]


def _same_id_two_folders(t: _Setup, *extra) -> list[str]:
    root, first = t.data()
    pid, gender, race, age = first.name.rsplit("_", 3)
    shutil.copytree(first, first.with_name(f"{pid}_{'male' if gender == 'female' else 'female'}_{race}_{age}"))
    return t.train(*extra, root=root)


def _run_dir_held_by_another_process(t: _Setup) -> list[str]:
    run = t.run_copy()
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time\n"
                               "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
                               "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, b'%d' % os.getpid())\n"
                               "print('locked', flush=True); time.sleep(120)", str(run / ".lock")],
                              stdout=subprocess.PIPE, text=True)
    t.cleanups.append(lambda: (holder.kill(), holder.wait(timeout=30)))
    assert holder.stdout.readline().strip() == "locked"
    t.pid = holder.pid
    return ["train", "--resume", str(run), "train.epochs=2", "train.max_steps=2"]


def _stale_lock(t: _Setup) -> list[str]:
    run = t.run_copy()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (run / ".lock").write_text(gone.stdout)   # left by a process that died (kill -9) holding it
    return ["train", "--resume", str(run), "train.epochs=2", "train.max_steps=2"]


def _lock_taken_over_and_released(t: _Setup, out: str, caught) -> None:
    run = t.tmp / "runs" / "quickstart" / "1"
    assert load_checkpoint(run / "last.pt")["step"] == 2 and not (run / ".lock").exists()


def _person_with_six_images(t: _Setup) -> list[str]:
    root, first = t.data()
    (first / "mask5.jpg").unlink()
    return t.train(root=root)


def _decisions_with_an_unknown_class(t: _Setup) -> list[str]:
    run = t.run_copy()
    (run / "decisions.json").write_text(json.dumps({"applied": True, "offsets": {"age": {"old": 0.5}}}))
    return ["predict", "--ckpt", str(run), "--data", str(t.root), "--out", str(t.tmp / "out"), "--workers", "0"]


class Case:
    def __init__(self, setup, code: int, fragment: str | None, after=None):
        self.setup, self.code, self.fragment, self.after = setup, code, fragment, after


RED_TEAM = {
    # 1. a full disk (or a file-size limit) while saving a checkpoint; the real writer under RLIMIT_FSIZE is in
    #    test_reliability.py (test_file_size_limit_while_saving_is_one_line)
    "disk full in torch's writer": Case(_disk_full_at_second_last_pt, 2, "could not write checkpoint {runs}/quickstart/"
                                        "1/last.pt: No space left on device; the previous checkpoint is intact",
                                        _previous_last_pt_intact),
    # 2. a predictions table missing a class's probability column
    "report: run without a class column": Case(_oof_without_a_class, 2, "oof.csv: no column prob/age/>=60, but the "
                                               "run's config gives head age the classes <30, 30-59, >=60"),
    "report: --pred without a class column": Case(_predictions_without_a_class, 2, "holds class 2, but the table has "
                                                  "only 2 prob/age/ columns (<30, 30-59)"),
    # 3. an empty head list; options after the overrides
    "--heads ''": Case(lambda t: t.train("--heads", ""), 2, "--heads '': no head named"),
    "--heads ','": Case(lambda t: t.train("--heads", ","), 2, "--heads ',': no head named"),
    "train.heads=[]": Case(lambda t: t.train("train.heads=[]"), 2, "train.heads: empty list; name at least one head "
                                                                   "(mask, gender, age), or null for every head"),
    "--heads between overrides": Case(lambda t: t.train("--heads", "age", "train.batch_size=8"), 0,
                                      "(test_resnet, heads age,",
                                        _only_age_trained),
    # 4. floats that must be finite (and in range)
    "train.lr=0": Case(lambda t: t.train("train.lr=0"), 2, "train.lr: 0.0 is out of range; expected > 0"),
    "train.lr=.nan": Case(lambda t: t.train("train.lr=.nan"), 2, "train.lr: nan is not a finite number"),
    "train.weight_decay=.inf": Case(lambda t: t.train("train.weight_decay=.inf"), 2,
                                    "train.weight_decay: inf is not a finite number"),
    "train.momentum=.nan": Case(lambda t: t.train("train.momentum=.nan"), 2, "train.momentum: nan is not a finite"),
    "train.min_lr=-0.001": Case(lambda t: t.train("train.min_lr=-0.001"), 2,
                                "train.min_lr: -0.001 is out of range; expected >= 0"),
    "heads.age.label_smoothing=1": Case(lambda t: t.train("heads.age.label_smoothing=1"), 2,
                                        "heads.age.label_smoothing: 1.0 is out of range; expected in [0, 1)"),
    "heads.age.focal_gamma=.nan": Case(lambda t: t.train("heads.age.focal_gamma=.nan"), 2,
                                       "heads.age.focal_gamma: nan is not a finite number"),
    "train.ema.decay=.nan": Case(lambda t: t.train("train.ema.enabled=true", "train.ema.decay=.nan"), 2,
                                 "train.ema.decay: nan is not a finite number"),
    "train.mixup=-0.2": Case(lambda t: t.train("train.mixup=-0.2"), 2, "train.mixup: -0.2 is out of range; "
                                                                       "expected >= 0"),
    "heads.age.weight=.nan": Case(lambda t: t.train("heads.age.weight=.nan"), 2,
                                  "heads.age.weight: nan is not a finite number"),
    "a loss share of .nan": Case(lambda t: t.train("heads.age.loss={focal: .nan, f1: 0.5}"), 2,
                                 "heads.age.loss.focal: nan is not a finite number"),
    "heads.age.target=decades": Case(lambda t: t.train("heads.age.target=decades"), 2,
                                     "heads.age.target: invalid choice 'decades' (did you mean"),
    "heads.age.years_sigma=0": Case(lambda t: t.train("heads.age.target=years", "heads.age.years_sigma=0"), 2,
                                    "heads.age.years_sigma: 0.0 is out of range; expected > 0"),
    "heads.age.years_range=[60,20]": Case(lambda t: t.train("heads.age.target=years", "heads.age.years_range=[60,20]"),
                                          2, "heads.age.years_range: expected [first, last] whole years with 0 <= "
                                             "first < last, got [60, 20]"),
    # 5. a config file that is not UTF-8
    "latin-1 config": Case(_latin1_config, 2, "latin1.yaml: not UTF-8 text (byte 0xe9 at offset"),
    # 6. digits that are not ASCII
    "age '\u00b25' in a folder name": Case(lambda t: _folder_age(t, "\u00b25"), 2,
                                           "000001_female_Asian_\u00b25: age '\u00b25' is not a non-negative whole "
                                           "number of years"),
    "age '\u0664\u0665' in a folder name": Case(lambda t: _folder_age(t, "\u0664\u0665"), 2,
                                                "age '\u0664\u0665' is not a non-negative whole number"),
    "age '\u00b25' in a label fix": Case(_label_fix_age, 2, "fixes.csv line 2: age value '\u00b25'; expected a "
                                                            "non-negative whole number of years"),
    "a run folder named '\u00b2'": Case(_odd_run_folder, 0, None, _numbered_run_made),
    # 7. overrides on --resume
    "--resume with train.lr": Case(lambda t: ["train", "--resume", str(t.trained), "train.lr=0.01"], 2,
                                   "last.pt: train.lr 0.002 -> 0.01 would change the optimisation half-way; on "
                                   "resume only train.epochs, train.early_stop, train.max_steps"),
    "--resume with train.epochs": Case(lambda t: ["train", "--resume", str(t.run_copy()), "train.epochs=2",
                                                  "train.max_steps=2"], 0, "resumed from epoch 1 step 1",
                                       _resumed_config_is_what_ran),
    # 8. a head labelled in training but not in the validation fold
    "no age label in the validation fold": Case(_age_unlabelled_in_validation, 2, "head age: no labelled image in "
                                                "validation fold"),
    # 9. an unexpected error before the first checkpoint leaves no run dir
    "a bug mid-epoch": Case(_bug_mid_epoch, 1, "unexpected RuntimeError: boom; rerun with --debug"),
    # also: pickles refused without suggesting unsafe loading, and without a torch warning first
    "pickle calling a blocked module": Case(_blocked_module_pickle, 2, "evil.pt holds objects that are not plain "
                                            "tensors/data (found posix.system); refusing to load it (it could run "
                                            "code)", _never_suggests_unsafe_loading),
    "raw pickle, protocol 4": Case(_raw_pickle, 2, "raw.pt is not a multitask checkpoint (the safe loader refused it:",
                                   _never_suggests_unsafe_loading),
    # also: one person id in two folders with different labels
    "same id, two folders": Case(_same_id_two_folders, 2, "is in 2 folders with different labels:"),
    "same id, two folders, warn": Case(lambda t: _same_id_two_folders(t, "data.on_conflict=warn"), 0,
                                       "1 person id(s) in folders with different labels, kept the first "
                                       "(data.on_conflict=warn)"),
    # also: one training process per run dir
    "run dir held by a live process": Case(_run_dir_held_by_another_process, 2, "is in use by another training "
                                           "process (pid {pid}, lock"),
    "stale lock of a dead process": Case(_stale_lock, 0, "resumed from epoch 1 step 1", _lock_taken_over_and_released),
    # also: a run's decisions.json that names a class the head does not have
    "decisions.json with an unknown class": Case(_decisions_with_an_unknown_class, 2, "decisions.json: offsets.age: "
                                                 "unknown class 'old'; head age has the classes <30, 30-59, >=60"),
    # also: a person folder without the 7 expected images is named in the data summary
    "a person with 6 images": Case(_person_with_six_images, 0, "1 person folder(s) without exactly 7 images: "
                                   "{first} (6)"),
}
KEEPS_ITS_RUN = {"disk full in torch's writer"}   # failed after its first checkpoint: the run stays to resume


# round 4: run names that escape output_dir, over-deep YAML, messages that named the wrong thing, edges and heads
# given twice. Each is refused from the config alone: nothing is written anywhere, not even output_dir.
def _escaping_name(t: _Setup, name: str, command: str = "train") -> list[str]:
    out = [f"output_dir={t.tmp / 'a' / 'b' / 'runs'}"]
    if command == "distill":
        return ["distill", "--teacher", str(t.trained), "--config", CONFIG, "--name", name, *_base(t.root, t.tmp), *out]
    return t.train(*out, f"name={name}")


def _nothing_written(t: _Setup, out: str, caught) -> None:
    assert not (t.tmp / "a").exists() and not (t.tmp / "abs").exists() and not (t.tmp / "runs").exists()


def _deep_yaml(t: _Setup, levels: int, block: bool = False) -> list[str]:
    path = t.tmp / "deep.yaml"
    path.write_text("".join(f"{'  ' * i}k{i}:\n" for i in range(levels)) if block else
                    "train: " + "[" * levels + "]" * levels + "\n")
    return ["train", "--config", str(path), *_base(t.root, t.tmp)]


def _manifest_row_with_an_extra_field(t: _Setup) -> list[str]:
    root, first = t.data()
    rows = [f"{p},wear,female,<30,p1" for p in sorted(first.glob("*.jpg"))]
    rows[0] += ",male"   # one field more than the header: pandas took the first column for an index
    (t.tmp / "merged.csv").write_text("path,mask,gender,age,group\n" + "\n".join(rows) + "\n")
    return t.train("data.source=manifest", f"data.manifest={t.tmp / 'merged.csv'}")


def _output_dir_in_the_data(t: _Setup) -> list[str]:
    root, _ = t.data()
    return t.train(f"data.root={root}", f"output_dir={root / 'train' / 'images' / 'runs'}")


def _data_folder_untouched(t: _Setup, out: str, caught) -> None:
    assert not (t.tmp / "data" / "train" / "images" / "runs").exists()


RED_TEAM.update({
    "name=../../escape": Case(lambda t: _escaping_name(t, "../../escape"), 2, "name: '../../escape' is not a run "
                              "name; give a relative path without '..'", _nothing_written),
    "name=..": Case(lambda t: _escaping_name(t, ".."), 2, "name: '..' is not a run name", _nothing_written),
    "name=/abs/path": Case(lambda t: _escaping_name(t, str(t.tmp / "abs")), 2, "/abs' is not a run name",
                           _nothing_written),
    "distill --name ..": Case(lambda t: _escaping_name(t, "..", "distill"), 2, "name: '..' is not a run name",
                              _nothing_written),
    "YAML nested 5,000 levels": Case(lambda t: _deep_yaml(t, 5_000), 2, "deep.yaml line 1: not valid YAML (nested "
                                     "more than 32 levels deep"),
    "YAML nested 100,000 levels": Case(lambda t: _deep_yaml(t, 100_000), 2, "nested more than 32 levels deep"),
    "YAML mappings nested 5,000 levels": Case(lambda t: _deep_yaml(t, 5_000, block=True), 2, "deep.yaml line 32: "
                                              "not valid YAML (nested more than 32 levels deep"),
    "manifest row with an extra field": Case(_manifest_row_with_an_extra_field, 2, "merged.csv line 2: 6 fields, but "
                                             "the header has 5 (path, mask, gender, age, group); quote a value"),
    "train.distill.temperature=1e30": Case(lambda t: t.train(f"train.distill.teachers=[{t.trained}]",
                                                             "train.distill.temperature=1e30"), 2,
                                           "train.distill.temperature: 1e+30 is out of range; expected in [0.1, 100]"),
    "train.distill.temperature=1e-300": Case(lambda t: t.train(f"train.distill.teachers=[{t.trained}]",
                                                               "train.distill.temperature=1e-300"), 2,
                                             "train.distill.temperature: 1e-300 is out of range"),
    "output_dir inside the data": Case(_output_dir_in_the_data, 2, "train/images/runs is inside ",
                                       _data_folder_untouched),
    "heads.age.bins=[30,30]": Case(lambda t: t.train("heads.age.bins=[30,30]"), 2, "heads.age.bins: edges must "
                                   "strictly increase, got [30.0, 30.0]"),
    "composite=[mask,mask]": Case(lambda t: t.train("composite=[mask,mask]"), 2, "composite: ['mask', 'mask'] names a "
                                  "head twice"),
})


@pytest.mark.parametrize("case", list(RED_TEAM))
def test_red_team_case(case, synth_root, trained, tmp_path, monkeypatch, capsys):
    import warnings

    t = _Setup(tmp_path, synth_root, trained, monkeypatch)
    spec = RED_TEAM[case]
    try:
        argv = spec.setup(t)
        before = {p.name: p.read_bytes() for p in trained.iterdir() if p.is_file()}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            code = main(argv)
    finally:
        for cleanup in t.cleanups:
            cleanup()
    fragment = (spec.fragment or "").format(runs=tmp_path / "runs", pid=getattr(t, "pid", "?"),
                                            first=getattr(t, "first", "?"))
    if spec.code == 0:
        out = capsys.readouterr().out
        assert code == 0, out
        assert re.sub(r"\s+", "", fragment) in re.sub(r"\s+", "", out)   # rich wraps lines, even inside a path
    else:
        message = error_line(capsys)
        assert code == spec.code and fragment in message, message
        assert "weights_only" not in message and "will likely succeed" not in message
        if argv[0] == "train" and "--resume" not in argv and case not in KEEPS_ITS_RUN:
            assert files_under(tmp_path / "runs") == []   # nothing half-made left behind, whatever stopped it
    assert {p.name: p.read_bytes() for p in trained.iterdir() if p.is_file()} == before   # the shared run is untouched
    if spec.after:
        spec.after(t, "", caught)


def test_cli_config_error_is_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  backbon: resnet18\n")
    proc = subprocess.run([sys.executable, "-m", "multitask", "train", "--config", str(path)],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown key 'model.backbon'" in lines[0] and "Traceback" not in proc.stderr


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
    before = files_under(run)
    code = main(["train", "--resume", str(run), "train.max_steps=2"])
    message = error_line(capsys)
    assert code == 2 and expected in message and str(run / "last.pt") in message, message
    assert files_under(run) == before   # no tb/ event file, no log: checked before the run dir was touched


SECRET = "s3cr3t-pw"


# name -> (argv builder, the fragment the one error line holds)
ONE_LINE = {
    # 10. a key for a head that does not exist
    "config show heads.newhead.weight=0.5": (
        lambda t: ["config", "show", "heads.newhead.weight=0.5"],
        "heads.newhead: unknown head 'newhead'; configured: mask, gender, age "
        "(a new head needs heads.newhead.classes)"),
    "config show heads.agee.weight=0.5": (
        lambda t: ["config", "show", "--config", QUICKSTART, "heads.agee.weight=0.5"],
        "heads.agee: unknown head 'agee' (did you mean age"),
    "sweep space key heads.newhead.weight": (
        lambda t: t.sweep("params:\n  heads.newhead.weight: {low: 0.5, high: 2.0}\n"),
        "heads.newhead.weight=0.5: "),
    # 11. train.monitor against the metrics the heads log, before anything trains
    "train.monitor typo": (
        lambda t: ["train", "--config", QUICKSTART, *t.tiny, "train.monitor=val/age/f11"],
        "train.monitor: 'val/age/f11' is not a metric this run logs (did you mean val/age/f1"),
    "train.monitor of a head that does not train": (
        lambda t: ["train", "--config", QUICKSTART, *t.tiny, "--heads", "age", "train.monitor=val/mask/f1"],
        "train.monitor: 'val/mask/f1' is not a metric this run logs"),
    "sweep choice of a never-logged monitor": (
        lambda t: t.sweep("params:\n  train.monitor: {choices: [val/composite/f1, val/age/f1_old]}\n"),
        "train.monitor=val/age/f1_old: train.monitor: 'val/age/f1_old' is not a metric this run logs"),
    # 14. an in-memory SQLite study keeps nothing
    "--storage sqlite://": (lambda t: t.sweep(LR_SPACE, "--storage", "sqlite://"),
                            "--storage sqlite://: an in-memory SQLite database keeps no study"),
    "--storage sqlite:///:memory:": (lambda t: t.sweep(LR_SPACE, "--storage", "sqlite:///:memory:"),
                                     "--storage sqlite:///:memory:: an in-memory SQLite database"),
    # 15. a refused storage: the password masked (the after-check: not echoed, no sweep folder left)
    "--storage with a password, refused": (
        lambda t: t.sweep(LR_SPACE, "--storage", f"postgresql://user:{SECRET}@127.0.0.1:9/db"),
        "--storage postgresql://user:***@127.0.0.1:9/db: cannot open the study database"),
    "--storage not parseable, with a password": (
        lambda t: t.sweep(LR_SPACE, "--storage", f"nosuchdb://user:{SECRET}@host/db"),
        "--storage nosuchdb://user:***@host/db: cannot open the study database"),
    # 17. an exponent float without a dot is a number (here one out of range: it was read as a number)
    "train.lr=-5e-4": (lambda t: ["config", "show", "train.lr=-5e-4"],
                       "train.lr: -0.0005 is out of range; expected > 0"),
    "sweep fixed train.lr: -1E-3": (
        lambda t: t.sweep(LR_SPACE + "fixed:\n  train.weight_decay: -1E-3\n"),
        "train.weight_decay: -0.001 is out of range; expected >= 0"),
    # 22. the same table twice without --names
    "compare RUN RUN": (lambda t: t.compare_same(), "is given twice; a table compared with itself differs by 0"),
}


@pytest.mark.parametrize("case", list(ONE_LINE))
def test_one_line_refusal(case, synth_root, tmp_path, capsys):
    build, fragment = ONE_LINE[case]
    argv = build(Commands(synth_root, tmp_path))
    code = main(argv)
    message = error_line(capsys)
    assert code == 2 and fragment in message, message
    assert SECRET not in message
    if argv[0] in ("train", "sweep"):   # refused before anything was made: no run dir, no runs/<name>/sweep/
        assert files_under(tmp_path / "runs", dirs=True) == [] and files_under(tmp_path / "cache", dirs=True) == []


def test_a_failed_train_leaves_no_empty_runs_folder(synth_root, tmp_path, capsys):
    """The run dir is made, then the data is missing: the run dir goes, and so do runs/<name>/ and runs/ this run
    made; folders that were there before stay."""
    tiny = Commands(synth_root, tmp_path).tiny
    missing = ["train", "--config", QUICKSTART, *tiny, f"data.root={tmp_path / 'nodata'}"]
    assert main(missing) == 2
    assert "nodata" in error_line(capsys)
    assert not (tmp_path / "runs").exists()
    (tmp_path / "runs" / "other").mkdir(parents=True)
    assert main(missing) == 2
    error_line(capsys)
    assert files_under(tmp_path / "runs", dirs=True) == ["other"]
    (tmp_path / "runs" / "quickstart").mkdir()   # there before (empty): not this run's to remove
    assert main(missing) == 2
    error_line(capsys)
    assert files_under(tmp_path / "runs", dirs=True) == ["other", "quickstart"]
