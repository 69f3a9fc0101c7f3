"""The training engine end to end on tiny synthetic data (CPU, seconds each)."""
import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import REPO, TINY_IMAGES, tb_scalars, tiny_overrides, wandb_history

from multitask.cli import main
from multitask.config import load_config
from multitask.runs.checkpoint import load_checkpoint
from multitask.runs.run_dir import find_decisions
from multitask.train.callbacks import Callback
from multitask.train.run import fit, run_training
from multitask.train.state import TrainState
from multitask.utils.devices import resolve_precision


@pytest.mark.slow
def test_one_epoch_writes_the_run_dir_with_every_tracker(tiny_cfg, tmp_path):
    cfg = tiny_cfg("tracking.wandb.mode=offline", "train.epochs=2", "tracking.confusion_every=1")
    run_dir = run_training(cfg)
    for name in ("config.yaml", "best.pt", "last.pt", "metrics.csv", "oof.csv"):
        assert (run_dir / name).is_file(), name
    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert metrics["epoch"].tolist() == [1, 2]
    for key in ("train/mask/loss", "val/mask/f1", "val/gender/f1", "val/age/f1", "val/age/f1_>=60",
                "val/composite/f1", "val/composite/acc", "lr", "loss_weight/age"):
        assert key in metrics.columns, key
    assert metrics["val/composite/f1"].between(0, 1).all()
    scalars, images = tb_scalars(run_dir / "tb")
    assert {"confusion/mask", "confusion/gender", "confusion/age"} <= set(images)
    for key in ("val/mask/f1", "val/gender/f1", "val/age/f1", "val/composite/f1", "train/age/loss"):
        assert len(scalars[key]) == 2, key
    rows = wandb_history(run_dir)
    logged = set().union(*[r.keys() for r in rows])
    assert {"val/mask/f1", "val/age/f1", "val/composite/f1", "train/mask/loss"} <= logged
    # best.pt holds inference state only; last.pt everything to resume
    best, last = load_checkpoint(run_dir / "best.pt"), load_checkpoint(run_dir / "last.pt")
    assert "optimizer" not in best and "optimizer" in last and last["epoch"] == 2
    assert best["metric"]["name"] == "val/composite/f1"
    assert best["metric"]["value"] == pytest.approx(metrics["val/composite/f1"].max())
    oof = pd.read_csv(run_dir / "oof.csv")
    assert {"prob/mask/wear", "true/age", "pred/composite", "true/composite", "age_years", "group"} <= set(oof)
    assert oof[["prob/age/<30", "prob/age/30-59", "prob/age/>=60"]].sum(1).round(4).eq(1).all()


def test_run_training_from_python_is_what_multitask_train_does(synth_root, tmp_path):
    """One assembly for every caller: the same files (decisions.json too) and the same metrics to the last digit."""
    overrides = tiny_overrides(synth_root, tmp_path, "deterministic=true", "train.epochs=2", "train.max_steps=4")
    assert main(["train", "--config", "configs/quickstart.yaml", *overrides, "name=cli"]) == 0
    python = run_training(load_config("configs/quickstart.yaml", [*overrides, "name=python"]))
    cli = tmp_path / "runs" / "cli" / "1"
    assert python == tmp_path / "runs" / "python" / "1"
    assert run_files(python) == run_files(cli) and "decisions.json" in run_files(cli)
    a, b = pd.read_csv(cli / "metrics.csv"), pd.read_csv(python / "metrics.csv")
    timed = [c for c in a if c.startswith("time/") or c.endswith("_per_s") or c.endswith("_s")]
    pd.testing.assert_frame_equal(a.drop(columns=timed), b.drop(columns=timed), check_exact=True)
    assert (cli / "oof.csv").read_text() == (python / "oof.csv").read_text()
    assert (cli / "decisions.json").read_text() == (python / "decisions.json").read_text()


def run_files(run_dir: Path) -> set[str]:
    """A run dir's files by relative path; TensorBoard's event files are named after the host and the clock."""
    return {str(p.relative_to(run_dir)) if "tfevents" not in p.name else str(p.parent.relative_to(run_dir))
            for p in run_dir.rglob("*") if p.is_file()}


def test_heads_flag_trains_a_single_head(tiny_cfg, tmp_path, synth_root):
    code = main(["train", "--config", "configs/quickstart.yaml", "--heads", "age",
                 *tiny_overrides(synth_root, tmp_path)])
    assert code == 0
    run_dir = next((tmp_path / "runs" / "quickstart").iterdir())
    ckpt = load_checkpoint(run_dir / "best.pt")
    assert ckpt["trained_heads"] == ["age"]
    assert [k for k in ckpt["model"] if k.startswith("heads.")] and all(
        k.startswith("heads.age") for k in ckpt["model"] if k.startswith("heads."))
    columns = pd.read_csv(run_dir / "metrics.csv").columns
    assert "val/age/f1" in columns and "val/mask/f1" not in columns and "val/composite/f1" not in columns
    assert ckpt["metric"]["name"] == "val/mean/f1"


def test_single_18_class_head_scores_the_composite_and_each_head(tiny_cfg):
    cfg = tiny_cfg("data.root=" + str(tiny_cfg().data.root), config="configs/mask_resnet18_single18.yaml")
    metrics = fit(cfg, Path(cfg.output_dir) / "single18")
    assert {"val/class18/f1", "val/composite/f1", "val/mask/f1", "val/age/f1"} <= set(metrics)
    oof = pd.read_csv(Path(cfg.output_dir) / "single18" / "oof.csv")
    assert "prob/class18/wear/male/<30" in oof and "prob/mask/wear" in oof  # marginals of the 18 classes


@pytest.mark.parametrize("weighting", ["static", "pcgrad"])
def test_resume_reaches_the_same_weights_as_an_uninterrupted_run(tiny_cfg, weighting):
    overrides = ("deterministic=true", "train.epochs=2", "train.amp=off", "data.augment.hflip=0.5",
                 "train.mixup=0.2", "train.mix_prob=0.5", f"train.loss_weighting={weighting}")
    full = run_training(tiny_cfg(*overrides))
    # the same 2-epoch run stopped after epoch 1 (84 images / 16 = 6 steps), as if it had been killed there
    first = run_training(tiny_cfg(*overrides, "train.max_steps=6"))
    last = load_checkpoint(first / "last.pt")
    assert last["epoch"] == 1
    resumed = run_training(tiny_cfg(*overrides), resume=str(first))
    assert resumed == first
    a, b = load_checkpoint(full / "last.pt")["model"], load_checkpoint(first / "last.pt")["model"]
    assert load_checkpoint(first / "last.pt")["epoch"] == 2
    for key in a:
        assert torch.equal(a[key], b[key]), key
    rows = pd.read_csv(first / "metrics.csv")
    assert rows["epoch"].tolist() == [1, 2]
    assert rows["val/composite/f1"].tolist() == pytest.approx(pd.read_csv(full / "metrics.csv")["val/composite/f1"]
                                                              .tolist())


def test_a_resume_on_changed_labels_is_refused_unless_resume_anyway(synth_root, tmp_path, capsys):
    """The checkpoint keeps a fingerprint of each source's files, people, folds and labels: one label edited in a
    manifest stops `--resume` in one line; --resume-anyway goes on and says so."""
    gt = pd.read_csv(synth_root / "eval" / "gt.csv", dtype=str)
    table = pd.DataFrame({"path": [str(synth_root / "eval" / "images" / i) for i in gt["ImageID"]],
                          "mask": gt["mask"], "gender": gt["gender"], "age": gt["age"], "group": gt["group"]})
    table.to_csv(tmp_path / "m.csv", index=False)
    assert main(["train", "--config", "configs/quickstart.yaml", "data.sources.m.kind=manifest",
                 f"data.sources.m.path={tmp_path / 'm.csv'}",
                 *tiny_overrides(synth_root, tmp_path, "train.epochs=2", "train.max_steps=1")]) == 0
    run_dir = next((tmp_path / "runs" / "quickstart").iterdir())
    assert set(load_checkpoint(run_dir / "last.pt")["data"]) == {"m"}
    table.loc[5, "gender"] = "female" if table.loc[5, "gender"] == "male" else "male"
    table.to_csv(tmp_path / "m.csv", index=False)
    capsys.readouterr()
    assert main(["train", "--resume", str(run_dir), "train.max_steps=null"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"the data changed since this run was saved (source m: the same {len(table)} images, and its files, " \
        f"people, folds or labels differ); resume on the same data, start a new run, or pass --resume-anyway" in err
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == 1   # untouched
    assert main(["train", "--resume", str(run_dir), "--resume-anyway", "train.max_steps=null"]) == 0
    out = capsys.readouterr().out
    assert out.count("resumed on other data than this run was saved with (--resume-anyway): source m: ") == 1
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == 2


def test_train_state_round_trips_through_its_state_dict(tiny_cfg):
    cfg = tiny_cfg("train.loss_weighting=uncertainty", "train.ema.enabled=true", "train.max_steps=2")
    run_dir = run_training(cfg)
    ckpt = load_checkpoint(run_dir / "last.pt")
    counts = {h.name: [1] * h.num_classes for h in cfg.trained_heads()}   # the saved class weights replace them
    state = TrainState.create(cfg, precision=resolve_precision("off", torch.device("cpu")), class_counts=counts,
                              steps_per_epoch=6, seed=0)
    state.load_state_dict(ckpt)
    assert (state.step, state.epoch, state.batch_in_epoch) == (2, 1, 0) and state.wandb_id == ckpt["tracker"][
        "wandb_id"]
    again = state.state_dict()
    assert set(again) == set(ckpt)
    for key in ("model", "ema", "criterion"):
        assert all(torch.equal(again[key][k], ckpt[key][k]) for k in ckpt[key]), key
    assert again["optimizer"]["param_groups"] == ckpt["optimizer"]["param_groups"]
    assert again["state"] == ckpt["state"] and again["mixer"] == ckpt["mixer"]
    assert set(state.state_dict(resumable=False)) == set(load_checkpoint(run_dir / "best.pt"))


class Recorder(Callback):
    def __init__(self, stop_after: int):
        self.events, self.stop_after = [], stop_after

    def on_fit_start(self, state):
        self.events.append("fit")

    def on_epoch_start(self, state, epoch):
        self.events.append(f"epoch{epoch}")

    def on_step_end(self, state):
        self.events.append(state.step)

    def on_epoch_end(self, state, metrics):
        self.events.append(("end", state.epoch, state.epoch_images, "val/composite/f1" in metrics))
        if state.epoch == self.stop_after:
            state.stop = "stopped by a callback"

    def on_fit_end(self, state, best):
        self.events.append(("done", bool(best)))


def test_callbacks_see_steps_and_epochs_and_can_stop_the_run(tiny_cfg):
    cfg = tiny_cfg("train.epochs=3")
    recorder = Recorder(stop_after=1)
    fit(cfg, Path(cfg.output_dir) / "cb", callbacks=[recorder])
    assert recorder.events == ["fit", "epoch0", 1, 2, 3, 4, 5, 6, ("end", 1, 84, True), ("done", True)]
    assert load_checkpoint(Path(cfg.output_dir) / "cb" / "last.pt")["epoch"] == 1   # saved before the stop


def test_bf16_autocast_runs_on_cpu(tiny_cfg):
    cfg = tiny_cfg("train.amp=bf16", "train.max_steps=2")
    precision = resolve_precision("bf16", torch.device("cpu"))
    assert precision.dtype == torch.bfloat16 and not precision.scaler
    metrics = fit(cfg, Path(cfg.output_dir) / "bf16")
    assert metrics and all(torch.isfinite(torch.tensor(v)) for v in metrics.values())


def test_competition_options_run_together(tiny_cfg):
    """EMA, weighted sampler, CutMix, uncertainty weighting, grad accumulation and clipping, SGD + onecycle."""
    cfg = tiny_cfg("train.ema.enabled=true", "train.sampler=weighted", "train.cutmix=1.0", "train.mix_prob=1.0",
                   "train.loss_weighting=uncertainty", "train.accum_steps=2", "train.grad_clip=1.0",
                   "train.optimizer=sgd", "train.scheduler=onecycle", "heads.mask.loss={ce: 0.5, f1: 0.5}",
                   "heads.mask.label_smoothing=0.1")
    run_dir = Path(cfg.output_dir) / "options"
    fit(cfg, run_dir)
    ckpt = load_checkpoint(run_dir / "last.pt")
    assert ckpt["ema"] is not None and ckpt["step"] == 3  # 84 train images / 16 per batch / 2 accumulated
    assert "weighting.log_vars" in ckpt["criterion"]
    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert metrics["loss_weight/mask"].iloc[0] != 1.0  # learned weights moved


def test_all_folds_makes_one_sub_run_per_fold_and_merges_oof(tiny_cfg):
    cfg = tiny_cfg("data.n_folds=2", "train.max_steps=1")
    parent = run_training(cfg, all_folds=True)
    assert (parent / "fold0" / "best.pt").is_file() and (parent / "fold1" / "best.pt").is_file()
    oof = pd.read_csv(parent / "oof.csv")
    assert sorted(oof["fold"].unique()) == [0, 1]
    assert oof["image_id"].is_unique and len(oof) == TINY_IMAGES
    # tuned decisions: fitted once, on every fold's OOF together, and found from each fold's checkpoint
    assert json.loads((parent / "decisions.json").read_text())["source"]["rows"] == TINY_IMAGES
    assert not (parent / "fold0" / "decisions.json").exists()
    assert find_decisions(parent / "fold1" / "best.pt") == parent / "decisions.json"


@pytest.mark.slow
@pytest.mark.parametrize("extra", [["train.device=CPU"],   # any case: gloo for CPU tensors even where a GPU is seen
                                   ["train.device=cpu", "train.loss_weighting=pcgrad", "train.accum_steps=2"]],
                         ids=["static-CPU", "pcgrad"])
def test_ddp_two_cpu_processes_complete_and_save_once(synth_root, tmp_path, extra):
    out = tmp_path / "runs"
    # --standalone: a local rendezvous on a free port, so parallel test runs never collide
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "multitask", "train", "--config", "configs/quickstart.yaml",
           *tiny_overrides(synth_root, tmp_path, "train.batch_size=8", *extra, cache="c")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = list((out / "quickstart").iterdir())
    assert len(runs) == 1, runs  # rank 0 alone made the run dir
    run_dir = runs[0]
    assert (run_dir / "best.pt").is_file()
    assert len(pd.read_csv(run_dir / "metrics.csv")) == 1
    oof = pd.read_csv(run_dir / "oof.csv")
    # every validation image (one fold of four) once, gathered from both ranks
    assert oof["image_id"].is_unique and len(oof) == TINY_IMAGES // 4
    assert proc.stdout.count("best val/composite/f1") == 1  # only rank 0 speaks
    assert not glob.glob(str(run_dir / ".*.tmp"))


@pytest.mark.slow
def test_loader_workers_start_after_opencv_was_busy_in_this_process(tmp_path):
    """The quickstart's shape: the synthetic set is drawn and the cache built in this process (OpenCV's thread pool
    running), then 2 loader workers are forked. Touching OpenCV's pool settings in a forked worker hangs it.

    Run as a child with a timeout, so a worker that hangs after the fork fails the test instead of stalling CI.
    """
    cmd = [sys.executable, "-m", "multitask", "train", "--config", "configs/quickstart.yaml",
           f"data.root={tmp_path / 'data'}", "data.synth.people=8", "data.synth.eval_people=2",
           "data.image_size=[96,72]", "data.num_workers=2", "data.n_folds=4", f"data.cache_dir={tmp_path / 'cache'}",
           f"output_dir={tmp_path / 'runs'}", "train.epochs=1", "train.batch_size=8", "train.max_steps=3",
           "tracking.wandb.mode=disabled", "tracking.tensorboard=false", "tracking.progress=false"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "wrote the synthetic data set" in proc.stdout
    last = load_checkpoint(next((tmp_path / "runs" / "quickstart").iterdir()) / "last.pt")
    assert last["step"] == 3
