"""A training, whoever starts it: one run, every fold, or a resume, each in its own locked run dir.

    multitask train --config configs/quickstart.yaml
    multitask train --config configs/mask_effnet_b0_multihead.yaml --heads mask,gender,age --folds all
    multitask train --resume runs/quickstart/3                      # continue where it stopped
    torchrun --nproc_per_node=2 -m multitask train --config ...     # DDP (NCCL on GPU, gloo on CPU)

    from multitask.train import fit, run_training
    run_dir = run_training(cfg)                                     # what `multitask train` does, the same run dir
    run_dir = run_training(cfg, run_dir="runs/mine/1", callbacks=[MyCallback()], sinks=[MySink()])
    best = fit(cfg, "runs/mine/1")                                  # the loop alone: no lock, folds or decisions

`run_training` is the one assembly of a training, for the CLI, sweep trials and Python callers alike: the checks,
the teacher (train.distill), the run dir and its lock, the folds, `fit` for each, and then, on rank 0, the tuned
decisions (train.decisions: auto) on the whole run's OOF. `fit` builds a `Trainer` (trainer.py) around one
`TrainState` (state.py: model, EMA, optimizer, scheduler, scaler, criterion, mixer, counters; its state_dict is the
checkpoint).
"""
from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from ..config import Config, from_dict
from ..decisions.fit import after_training
from ..model.losses import HeadLoss
from ..model.net import check_backbone
from ..model.normalization import pin_normalization
from ..runs.checkpoint import checkpoint_config, load_checkpoint
from ..runs.locks import RunDirLock
from ..runs.resume import load_for_resume
from ..runs.run_dir import (
    check_writable,
    discard_unsaved,
    find_checkpoint,
    fold_run_dir,
    make_run_dir,
    merge_fold_oof,
    missing_folders,
    remove_stale_temp_files,
    resolve_resume,
    run_base,
)
from ..tracking.sink import Sink
from ..tracking.tracker import Tracker
from ..utils.cpu_share import CpuShare
from ..utils.devices import pick_device, resolve_precision
from ..utils.distributed import DistInfo, broadcast_object, cleanup, init_distributed
from ..utils.errors import UserError
from .callbacks import Callback, SharedCores
from .distill import Teacher
from .teacher import teacher_for
from .trainer import Trainer, TrainingStopped
from .validate import check_monitor


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = not deterministic
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def config_for_resume(resume: str, overrides: list[str]) -> Config:
    """`multitask train --resume X` without --config: the checkpoint's own config (+ overrides).

    X may also be a k-fold run dir (with --folds all): its first fold's checkpoint holds the shared config."""
    path = resolve_resume(resume, any_fold=True)
    return from_dict(checkpoint_config(load_checkpoint(path), where=f"--resume {path}"), f"--resume {path}",
                     overrides=overrides)


def preflight(cfg: Config) -> None:
    """Checks that need neither data nor a model: a typo fails in a second, before a run dir or image cache exists."""
    check_backbone(cfg.model.backbone)
    for head in cfg.trained_heads():
        HeadLoss(spec=head)   # raises on an unknown loss name
    check_monitor(cfg)
    weights = cfg.model.pretrained
    if isinstance(weights, str) and weights.strip() and not Path(weights).expanduser().is_file():
        raise UserError(f"model.pretrained: weights file not found: {weights}; give an existing .pth/.safetensors "
                        f"file, true (timm hub) or false")
    pin_normalization(cfg)   # data.mean/std auto -> numbers before a resume compares the config with its checkpoint


def run_training(cfg: Config, *, resume: str | None = None, all_folds: bool = False, resume_anyway: bool = False,
                 run_dir: str | Path | None = None, callbacks: Iterable[Callback] = (),
                 sinks: Iterable[Sink] = ()) -> Path:
    """Train one run (or every fold) and return its run dir: a new runs/<name>/<n>, or `run_dir` when given (a
    sweep trial's). With `resume`, continue from its last.pt (a k-fold dir: every fold's), on the data it trained on
    (`resume_anyway`: on the data as it is now, said in one line). Once every fold is trained, rank 0 fits
    decisions.json on the run's OOF (the k-fold parent's merged oof.csv) unless train.decisions is off."""
    info = init_distributed(cfg.train.device)
    fresh: Path | None = None   # a run dir made by this call: removed again when it stops before any save
    made: list[Path] = []       # the folders above it that this call made (runs/<name>/): removed with it if empty
    lock: RunDirLock | None = None   # one training process per run dir (rank 0 holds it for the job)
    options = dict(callbacks=list(callbacks), sinks=list(sinks))
    try:
        preflight(cfg)
        teacher = teacher_for(cfg)   # records the teachers' digests in cfg, before a resume compares it
        run_dir, path = _run_dir(cfg, info, resume=resume, all_folds=all_folds, given=run_dir)
        if resume is None and run_dir is None:
            made = missing_folders(run_base(cfg)) if info.is_main else []
            run_dir = fresh = broadcast_object(make_run_dir(cfg) if info.is_main else None, info)
        if info.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)   # a given run dir (a sweep trial's) may not exist yet
        lock = RunDirLock(run_dir).acquire() if info.is_main else None
        if all_folds:
            train_folds(cfg, run_dir, info, resume=bool(resume), teacher=teacher, resume_anyway=resume_anyway,
                        **options)
        else:
            ckpt = load_for_resume(path, cfg, other_data=resume_anyway) if path is not None else None
            fit(cfg, run_dir, info, ckpt, teacher=teacher, **options)
        if info.is_main:
            after_training(cfg, run_dir)
        return run_dir
    except BaseException as err:   # whatever stopped it (bad input, a bug, Ctrl-C); a NaN stop keeps its run to inspect
        if fresh is not None and info.is_main and not isinstance(err, TrainingStopped):
            discard_unsaved(fresh, made)
        raise
    finally:
        if lock is not None:
            lock.release()
        cleanup(info)


def _run_dir(cfg: Config, info: DistInfo, *, resume: str | None, all_folds: bool,
             given: str | Path | None) -> tuple[Path | None, Path | None]:
    """(run dir, checkpoint to resume): the resumed run's, the given one, or (None, None) for a new run dir."""
    if resume and given is not None:
        raise UserError(f"run_training: give resume ({resume}) or run_dir ({given}), not both (a resume trains "
                        f"in its own run dir)")
    if resume and not all_folds:
        path = resolve_resume(resume)
        return path.parent, path
    if resume:
        if not Path(resume).is_dir():
            raise UserError(f"--resume {resume} --folds all: expected the k-fold run dir (holding fold0/, "
                            f"fold1/, ...)")
        return Path(resume), None
    return (Path(given), None) if given is not None else (None, None)


def train_folds(cfg: Config, parent: Path, info: DistInfo, *, resume: bool, teacher: Teacher | None = None,
                resume_anyway: bool = False, **options) -> None:
    """Every fold into parent/fold<k>, then their OOF merged into parent/oof.csv. On resume, a fold with a last.pt
    continues and one without starts (again) from scratch."""
    for fold in range(cfg.data.n_folds):
        fold_cfg = copy.deepcopy(cfg)
        fold_cfg.data.fold = fold
        fold_dir = fold_run_dir(parent, fold)
        last = find_checkpoint(fold_dir, want="last") if resume and fold_dir.is_dir() else None
        ckpt = load_for_resume(last, fold_cfg, other_data=resume_anyway) if last is not None else None
        fit(fold_cfg, fold_dir, info, ckpt, teacher=teacher, **options)
    if info.is_main:
        merge_fold_oof(parent, cfg.data.n_folds)


def fit(cfg: Config, run_dir: str | Path, info: DistInfo = DistInfo(), ckpt: dict | None = None,
        callbacks: Iterable[Callback] = (), teacher: Teacher | None = None, sinks: Iterable[Sink] = ()) -> dict:
    """Train one run into `run_dir` (from `ckpt` when resuming); returns the best epoch's metrics.

    Args:
        callbacks: hooks into the loop (train/callbacks.py).
        teacher: what train.distill learns from; default: built from train.distill.teachers (teacher_for).
        sinks: more places every logged metric goes, beside the config's trackers (tracking/sink.py)."""
    run_dir = Path(run_dir)
    teacher = teacher if teacher is not None else teacher_for(cfg)
    normalization = pin_normalization(cfg)   # what the run saves; `why` goes into its header
    device = pick_device(cfg.train.device, local_rank=info.local_rank, key="train.device")
    seed_everything(cfg.seed + info.rank, cfg.deterministic)
    if info.is_main:
        check_writable(run_dir)   # now, not at the end of the first epoch
    tracker = Tracker(run_dir=run_dir, cfg=cfg, enabled=info.is_main, sinks=sinks,
                      resume_id=(ckpt or {}).get("tracker", {}).get("wandb_id"))
    if ckpt is not None and info.is_main:
        removed = remove_stale_temp_files(run_dir)
        if removed:
            tracker.print(f"removed {len(removed)} half-written file(s) left by the interrupted run: "
                          f"{', '.join(removed)}")
    # on the CPU, torch's threads follow how many multitask processes share the cores (utils/cpu_share.py); not for
    # a deterministic run: the thread count changes the last digits of a CPU training, so it keeps torch's own
    share = (CpuShare().join() if device.type == "cpu" and cfg.train.cpu_threads == "auto" and not cfg.deterministic
             else None)
    if device.type == "cpu" and isinstance(cfg.train.cpu_threads, int):
        torch.set_num_threads(cfg.train.cpu_threads)
    try:
        trainer = Trainer(cfg=cfg, run_dir=run_dir, info=info, precision=resolve_precision(cfg.train.amp, device),
                          tracker=tracker, callbacks=[*callbacks, *([SharedCores(share)] if share else [])],
                          teacher=teacher, notes=[normalization.describe(cfg.data.image_size)])
        return trainer.fit(ckpt)
    finally:
        if share is not None:
            share.leave()
        tracker.close()
