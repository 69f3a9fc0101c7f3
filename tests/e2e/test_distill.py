"""Distillation (train.distill, `multitask distill`): the loss term, the teacher's probabilities (predict's pipeline,
cached, out of fold), the student as an ordinary run, and bad input."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import TINY_IMAGES, error_line, image_count, make_ckpt, predict, tiny_overrides

from multitask.cli import main
from multitask.config import load_config
from multitask.data.sources import rows_and_folds
from multitask.heads import HeadSpec, years_key
from multitask.metrics.table import read_table
from multitask.model.distill import distill_kl, teacher_key
from multitask.model.losses import MultiTaskCriterion
from multitask.runs.checkpoint import load_checkpoint, save_checkpoint
from multitask.train.run import run_training
from multitask.train.teacher import teacher_for
from multitask.train.teacher_cache import file_digest

QUICKSTART = "configs/quickstart.yaml"


@pytest.fixture(scope="module")
def kfold_teacher(synth_root, tmp_path_factory):
    """A 2-fold teacher (1 epoch each) on the session's tiny set: fold k validated on (never trained on) fold k."""
    tmp = tmp_path_factory.mktemp("teacher")
    cfg = load_config(QUICKSTART, tiny_overrides(synth_root, tmp, "data.n_folds=2", "name=teacher"))
    return run_training(cfg, all_folds=True)


def student(tiny_cfg, teacher, *extra):
    return tiny_cfg(f"train.distill.teachers=[{teacher}]", "name=student", *extra)


# --------------------------------------------------------------------------------------------------- the loss
def test_kl_is_zero_when_the_student_is_the_teacher_and_positive_otherwise():
    torch.manual_seed(0)
    logits = torch.randn(6, 3) * 3
    for temperature in (1.0, 2.0, 4.0):
        assert float(distill_kl(logits, logits.softmax(-1), temperature=temperature)) == pytest.approx(0, abs=1e-6)
    other = torch.randn(6, 3).softmax(-1)
    term = float(distill_kl(logits, other, temperature=2.0))
    # against torch's own KL at T, times T^2
    expected = torch.nn.functional.kl_div((logits / 2).log_softmax(-1), (other.log() / 2).log_softmax(-1),
                                          log_target=True, reduction="batchmean") * 4
    assert term > 0.01 and term == pytest.approx(float(expected), rel=1e-5)
    # rows without a teacher (NaN) are left out of the mean
    partial = other.clone()
    partial[3:] = float("nan")
    assert float(distill_kl(logits, partial, temperature=2.0)) == pytest.approx(
        float(distill_kl(logits[:3], other[:3], temperature=2.0)), rel=1e-6)


def test_a_head_without_labels_on_a_row_still_learns_from_the_teacher():
    heads = [HeadSpec(name="mask", classes=["a", "b", "c"]),
             HeadSpec(name="age", classes=["<30", "30-59", ">=60"], bins=[30, 60], target="years",
                      years_range=[0, 10], loss={"ldl": 1.0, "ce": 0.5})]
    torch.manual_seed(0)
    outputs = {"mask": torch.randn(4, 3, requires_grad=True), "age": torch.randn(4, 3, requires_grad=True),
               years_key("age"): torch.randn(4, 11, requires_grad=True)}
    targets = {"mask": torch.tensor([0, -1, -1, -1]), "age": torch.full((4,), -1),
               years_key("age"): torch.full((4,), float("nan")),
               teacher_key("mask"): torch.tensor([[0.2, 0.5, 0.3]] * 4),
               teacher_key(years_key("age")): torch.full((4, 11), 1 / 11)}
    criterion = MultiTaskCriterion(heads=heads, distill=(0.7, 2.0))
    losses = criterion.head_losses(outputs, targets)
    sum(losses.values()).backward()
    # rows 1-3 have no mask label and no age at all: their gradient is the teacher's alone
    assert outputs["mask"].grad[1:].abs().sum() > 0
    assert outputs[years_key("age")].grad.abs().sum() > 0   # a years head distils its year distribution
    # without the teacher they get nothing
    plain = {k: v.detach().requires_grad_() for k, v in outputs.items()}
    no_teacher = {k: v for k, v in targets.items() if not k.startswith("teacher/")}
    sum(criterion.head_losses(plain, no_teacher).values()).backward()
    assert plain["mask"].grad[1:].abs().sum() == 0 and plain[years_key("age")].grad.abs().sum() == 0
    # labelled rows: alpha * KL + (1 - alpha) * the head's own loss
    own = MultiTaskCriterion(heads=heads).head_losses(outputs, targets)["mask"]
    kl = distill_kl(outputs["mask"], targets[teacher_key("mask")], temperature=2.0)
    assert losses["mask"].item() == pytest.approx((0.7 * kl + 0.3 * own).item(), rel=1e-6)


# --------------------------------------------------------------------------------------------------- the teacher
def test_the_out_of_fold_teacher_gives_each_image_only_the_fold_that_never_trained_on_it(kfold_teacher, tiny_cfg,
                                                                                        synth_root, tmp_path):
    cfg = student(tiny_cfg, kfold_teacher, "train.distill.tta=[identity,hflip]", "train.distill.out_of_fold=true")
    teacher = teacher_for(cfg)
    _, frame = rows_and_folds(cfg)
    targets = teacher.targets(cfg, frame, log=lambda line: None)
    # each member's own predictions of every training image, by `multitask predict` with the same views
    members = sorted(kfold_teacher.glob("fold*/best.pt"))
    by_member = []
    for k, ckpt in enumerate(members):
        out = tmp_path / f"pred{k}"
        predict(ckpts=[ckpt], data=synth_root / "train" / "images", out=out, tta=["identity", "hflip"],
                decisions="off", workers=0, batch_size=64)
        table, _, probs, _ = read_table(out / "predictions.csv")
        index = {os.path.realpath(p): i for i, p in enumerate(table["path"])}
        by_member.append({h: v[[index[os.path.realpath(p)] for p in frame["path"]]] for h, v in probs.items()})
    member_cfg = load_checkpoint(members[0])["config"]
    teacher_folds = rows_and_folds(load_config(None, [f"data.root={member_cfg['data']['root']}",
                                                      "data.n_folds=2", "seed=0"]))[1]
    fold_of = dict(zip(map(os.path.realpath, teacher_folds["path"]), teacher_folds["fold"]))
    folds = np.array([fold_of[os.path.realpath(p)] for p in frame["path"]])
    assert set(folds) == {0, 1}
    for head in ("mask", "gender", "age"):
        got = targets[teacher_key(head)]
        assert np.isfinite(got).all()
        for fold in (0, 1):
            rows = folds == fold
            np.testing.assert_allclose(got[rows], by_member[fold][head][rows], atol=2e-3)   # its own fold's member
            assert np.abs(got[rows] - by_member[1 - fold][head][rows]).max() > 0.01          # never the other
    assert teacher.stats == {"computed": len(frame), "cached": 0}   # one member per image: no pair computed twice


def test_the_teacher_cache_is_built_once_and_reused(kfold_teacher, tiny_cfg):
    cfg = student(tiny_cfg, kfold_teacher)
    _, frame = rows_and_folds(cfg)
    first = teacher_for(cfg)
    a = first.targets(cfg, frame, log=lambda line: None)
    files = sorted((Path(cfg.data.cache_dir) / "teachers").glob("*.npz"))
    assert len(files) == 2 and first.stats["computed"] == 2 * len(frame)   # in fold: both members on every image
    stamps = [f.stat().st_mtime_ns for f in files]
    lines = []
    again = teacher_for(student(tiny_cfg, kfold_teacher))
    b = again.targets(cfg, frame, log=lines.append)
    assert again.stats == {"computed": 0, "cached": 2 * len(frame)}
    assert [f.stat().st_mtime_ns for f in files] == stamps   # read, not rewritten
    assert any("0 image-model pairs computed" in line for line in lines)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    # other views are another cache entry
    other = teacher_for(student(tiny_cfg, kfold_teacher, "train.distill.tta=[identity]"))
    other.targets(cfg, frame, log=lambda line: None)
    assert other.stats["computed"] == 2 * len(frame)


def test_in_fold_teacher_uses_every_member_and_says_what_that_means(kfold_teacher, tiny_cfg):
    cfg = student(tiny_cfg, kfold_teacher)   # the default
    _, frame = rows_and_folds(cfg)
    lines = []
    teacher = teacher_for(cfg)
    teacher.targets(cfg, frame, log=lines.append)
    assert teacher.stats["computed"] + teacher.stats["cached"] == 2 * len(frame)
    assert any("in fold" in line and "trained on it" in line for line in lines)
    assert any("validation images were training images of a teacher member" in line for line in lines)


def test_specialists_teach_each_head_they_predict(tiny_cfg, tmp_path):
    """A teacher of a mask-only and a gender/age checkpoint gives every head a target, each from the member that
    predicts it (as predict merges them), and no row is left without one."""
    mask = make_ckpt(tmp_path / "mask.pt", seed=1, overrides=["train.heads=[mask]"])
    rest = make_ckpt(tmp_path / "rest.pt", seed=2, overrides=["train.heads=[gender,age]"])
    cfg = student(tiny_cfg, f"{mask},{rest}", "train.distill.tta=[identity]")
    _, frame = rows_and_folds(cfg)
    targets = teacher_for(cfg).targets(cfg, frame, log=lambda line: None)
    by_one = {}
    for ckpt, heads in ((mask, ["mask"]), (rest, ["gender", "age"])):
        own = student(tiny_cfg, ckpt, "train.distill.tta=[identity]", f"train.heads=[{','.join(heads)}]")
        alone = teacher_for(own).targets(own, frame, log=lambda line: None)
        by_one.update({teacher_key(h): alone[teacher_key(h)] for h in heads})
    for head in ("mask", "gender", "age"):
        key = teacher_key(head)
        assert targets[key].shape == (len(frame), len(cfg.heads[head].classes)) and not np.isnan(targets[key]).any()
        np.testing.assert_allclose(targets[key], by_one[key], atol=1e-6)


def damage(path: Path, how: str) -> None:
    """Rewrite a stored teacher cache file the way `how` names."""
    if how in ("truncated", "empty"):
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2] if how == "truncated" else b"")
        return
    with np.load(path) as stored:
        arrays = {name: stored[name] for name in stored.files}
    name = next(n for n in arrays if n != "__keys__")
    values = arrays[name].astype(np.float32)
    if how == "rows":
        values = values[:-1]
    elif how == "width":
        values = np.concatenate([values, np.zeros((len(values), 1), np.float32)], axis=1)
    elif how == "nan":
        values[0, 0] = np.nan
    elif how == "outside":
        values[0, :2] = [1.5, -0.5]
        values[0, 2:] = 0
    elif how == "sum":
        values[0] *= 0.5
    arrays[name] = values
    np.savez(path, **arrays)


@pytest.mark.parametrize("how", ["truncated", "empty", "rows", "width", "nan", "outside", "sum"])
def test_a_damaged_teacher_cache_is_computed_again_and_said_so(how, tiny_cfg, tmp_path):
    teacher = make_ckpt(tmp_path / "teacher.pt")
    cfg = student(tiny_cfg, teacher, "train.distill.tta=[identity]")
    _, frame = rows_and_folds(cfg)
    first = teacher_for(cfg).targets(cfg, frame, log=lambda line: None)
    (file,) = (Path(cfg.data.cache_dir) / "teachers").glob("*.npz")
    damage(file, how)
    lines = []
    again = teacher_for(cfg)
    second = again.targets(cfg, frame, log=lines.append)
    assert again.stats["computed"] == len(frame)   # nothing trusted from the damaged file
    warned = [line for line in lines if "teacher cache" in line]
    assert len(warned) == 1 and str(file) in warned[0] and "computing" in warned[0], lines
    for key in first:
        np.testing.assert_allclose(second[key], first[key], atol=1e-6)
    third = teacher_for(cfg)   # the file was written whole again
    third.targets(cfg, frame, log=lines.append)
    assert third.stats == {"computed": 0, "cached": len(frame)}


def test_a_teacher_that_gives_nan_is_named_and_no_out_of_fold_advice(synth_root, tmp_path, capsys):
    teacher = make_ckpt(tmp_path / "teacher.pt")
    ckpt = load_checkpoint(teacher)
    for key in ckpt["model"]:
        if key.startswith("heads.mask"):
            ckpt["model"][key] = torch.full_like(ckpt["model"][key], float("nan"))
    save_checkpoint(teacher, ckpt)
    code = main(["distill", "--teacher", str(teacher), "--config", QUICKSTART,
                 *tiny_overrides(synth_root, tmp_path, "train.distill.tta=[identity]")])
    line = error_line(capsys)
    assert code == 2
    assert str(teacher) in line and "non-finite" in line and "out_of_fold" not in line, line
    assert not (tmp_path / "runs").exists()
    assert not list((tmp_path / "cache" / "teachers").glob("*.npz"))   # nothing stored from it


# --------------------------------------------------------------------------------------------------- the run
def test_distill_trains_an_ordinary_run_with_agreement_and_a_teacher_report(kfold_teacher, synth_root, tmp_path,
                                                                           capsys):
    overrides = tiny_overrides(synth_root, tmp_path, "train.epochs=2")
    assert main(["distill", "--teacher", str(kfold_teacher), "--config", QUICKSTART, "--name", "kd", *overrides]) == 0
    run_dir = tmp_path / "runs" / "kd" / "1"
    cfg = load_config(run_dir / "config.yaml")
    members = sorted(str(p.resolve()) for p in kfold_teacher.glob("fold*/best.pt"))
    assert cfg.train.distill.teachers == [str(kfold_teacher)]
    assert cfg.train.distill.checkpoints == {m: file_digest(m) for m in members}   # paths and sha256
    metrics = pd.read_csv(run_dir / "metrics.csv")
    best = metrics.loc[metrics["val/composite/f1"].idxmax()]
    # val/<head>/agreement is the share of validation rows where student and teacher argmax agree
    oof, _, probs, _ = read_table(run_dir / "oof.csv")
    teacher_table, _, teacher_probs, _ = read_table(run_dir / "teacher.csv")
    assert list(teacher_table["image_id"]) == list(oof["image_id"])
    for head in ("mask", "gender", "age"):
        same = (probs[head].argmax(1) == teacher_probs[head].argmax(1)).mean()
        assert best[f"val/{head}/agreement"] == pytest.approx(same)
    # the report sets the student beside its teacher; predict reads the student like any run
    assert main(["report", str(run_dir)]) == 0
    html = (run_dir / "report" / "report.html").read_text()
    assert "Student against teacher" in html
    out = tmp_path / "pred"
    predict(ckpts=[run_dir], data=synth_root, out=out, workers=0)
    assert (out / "submission.csv").is_file()
    assert main(["export", str(run_dir), "--format", "safetensors", "--out", str(tmp_path / "export")]) == 0
    assert (tmp_path / "export" / "model.safetensors").is_file()


def test_resume_of_a_distilled_run_is_bit_exact(kfold_teacher, tiny_cfg, synth_root, tmp_path):
    overrides = ("deterministic=true", "train.epochs=2", "train.amp=off", "train.mixup=0.2", "train.mix_prob=0.5",
                 "train.ema.enabled=true", "train.accum_steps=2", "train.loss_weighting=pcgrad")
    full_cfg = student(tiny_cfg, kfold_teacher, *overrides, "name=full")
    full = run_training(full_cfg)
    cut_cfg = student(tiny_cfg, kfold_teacher, *overrides, "train.max_steps=3")   # 84 images: 6 batches, 3 steps
    first = run_training(cut_cfg)
    assert load_checkpoint(first / "last.pt")["epoch"] == 1
    # as `multitask train --resume` does it: the config (with the teacher's digests) from the checkpoint
    assert main(["train", "--resume", str(first), "train.max_steps=null"]) == 0
    a, b = load_checkpoint(full / "last.pt"), load_checkpoint(first / "last.pt")
    assert b["epoch"] == 2
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for key in a["ema"]:
        assert torch.equal(a["ema"][key], b["ema"][key]), key


def test_unlabelled_photos_learn_from_the_teacher_alone(kfold_teacher, synth_root, tmp_path, capsys):
    photos = synth_root / "eval" / "images"
    count = len(list(photos.glob("*.jpg")))
    assert count > 0
    overrides = tiny_overrides(synth_root, tmp_path)
    # an override right after the list options is an override, not a path
    assert main(["distill", "--config", QUICKSTART, "--name", "unl", *overrides, "--teacher", str(kfold_teacher),
                 "train.distill.out_of_fold=true", "--unlabelled", str(photos), "train.distill.alpha=0.5"]) == 0
    out = capsys.readouterr().out
    cfg = load_config(tmp_path / "runs" / "unl" / "1" / "config.yaml")
    assert cfg.data.sources["unlabelled"].kind == "images" and cfg.data.sources["unlabelled"].path == str(photos)
    assert cfg.train.distill.alpha == 0.5 and cfg.train.distill.out_of_fold
    assert f"unlabelled images {photos}: {count}" in out
    assert f"fold 0/4: {84 + count} train" in out   # the photos train, none validates
    # no member trained on them: the whole ensemble speaks for every photo
    assert f"out of fold: {112 + count} of {112 + count} images have a member" in out


def test_unlabelled_over_the_training_folder_or_twice_leaks_nothing(synth_root, tmp_path, capsys):
    """The training photos again as unlabelled ones would put every validation image into training (through the
    teacher); a folder given twice would count twice: both are dropped, and the data summary says how many."""
    teacher = make_ckpt(tmp_path / "teacher.pt")
    photos = synth_root / "eval" / "images"
    count = image_count(photos)
    overrides = tiny_overrides(synth_root, tmp_path, "train.distill.tta=[identity]", "train.max_steps=1")
    assert main(["distill", "--config", QUICKSTART, "--name", "unl", *overrides, "--teacher", str(teacher),
                 "--unlabelled", str(synth_root / "train" / "images"), str(photos), str(photos)]) == 0
    out = capsys.readouterr().out
    assert (f"data: dropped {TINY_IMAGES + count} repeated image row(s): {count} exact repeat(s) (the same photo, "
            f"labels and fold), {TINY_IMAGES} unlabelled copy(ies) of labelled photos") in out, out
    assert f"fold 0/4: {84 + count} train / 28 val images" in out   # each eval photo once, no validation image


@pytest.mark.slow
def test_ddp_distillation_on_two_cpu_processes(kfold_teacher, synth_root, tmp_path):
    """Rank 0 computes the teacher's probabilities into the cache, rank 1 reads them; the weighting reduces
    gradients across ranks as without a teacher."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "multitask",
           "distill", "--teacher", str(kfold_teacher), "--config", QUICKSTART, "--name", "ddp",
           *tiny_overrides(synth_root, tmp_path, "train.batch_size=8", "train.loss_weighting=pcgrad",
                           "train.device=cpu")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "runs" / "ddp" / "1"
    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert len(metrics) == 1 and 0 <= metrics["val/mask/agreement"].iloc[0] <= 1
    assert len(pd.read_csv(run_dir / "teacher.csv")) == len(pd.read_csv(run_dir / "oof.csv"))
    assert proc.stdout.count("image-model pairs computed") == 1   # only rank 0 speaks


# --------------------------------------------------------------------------------------------------- bad input
OTHER_AGES = {"bins": ["heads.age.bins=[30,58]"], "eval_bins": ["heads.age.eval_bins=[30,58]"],
              "years_range": ["heads.age.target=years", "heads.age.years_range=[0,90]"]}


@pytest.mark.parametrize("case", ["missing", "heads", "classes", "alpha", "temperature", *OTHER_AGES])
def test_bad_teacher_input_is_one_line_and_exit_2(case, synth_root, tmp_path, capsys):
    teacher = tmp_path / "teacher.pt"
    extra = []
    if case == "heads":
        make_ckpt(teacher, overrides=["train.heads=[mask]"])
    elif case == "classes":
        make_ckpt(teacher, overrides=["heads.gender.classes=[m,f,x]"])
    elif case in OTHER_AGES:   # the same class names over other ages: KL targets that mean something else
        make_ckpt(teacher, overrides=OTHER_AGES[case])
        extra = ["heads.age.target=years"] if case == "years_range" else []
    elif case != "missing":
        make_ckpt(teacher)
        extra = ["train.distill.alpha=1.5"] if case == "alpha" else ["train.distill.temperature=0"]
    code = main(["distill", "--teacher", str(teacher), "--config", QUICKSTART,
                 *tiny_overrides(synth_root, tmp_path, *extra)])
    line = error_line(capsys)
    assert code == 2
    expected = {"missing": "checkpoint not found", "heads": "no teacher checkpoint has a head 'gender'",
                "classes": "head 'gender' has classes", "alpha": "train.distill.alpha: 1.5 is out of range",
                "temperature": "train.distill.temperature: 0.0 is out of range",
                "bins": "head 'age' has bins [30, 58], the student [30, 60]",
                "eval_bins": "head 'age' has eval_bins [30, 58], the student [30, 60]",
                "years_range": "head 'age' has years_range [0, 90], the student [0, 100]"}[case]
    assert expected in line, line
    assert not (tmp_path / "runs").exists()   # refused before any run dir
