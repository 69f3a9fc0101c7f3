"""Training engine: one shared trunk, one head per task, per-head losses under AMP, checkpoints you can trust.

    multitask train --config configs/quickstart.yaml
    multitask train --config configs/mask_effnet_b0_multihead.yaml --heads mask,gender,age --folds all
    multitask train --resume runs/quickstart/3                      # continue where it stopped
    torchrun --nproc_per_node=2 -m multitask train --config ...     # DDP (NCCL on GPU, gloo on CPU)

The loop reads top to bottom: `fit` sets everything up, `train_one_epoch` and `evaluate` do the work, `save` writes
checkpoints. Per-step values stay on the device (no .item() on the hot path); the loss is read back only every
`SYNC_EVERY` steps for the progress bar and the non-finite check.
"""
from __future__ import annotations

import contextlib
import copy
import math
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from .checkpoint import FORMAT, VERSION, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import Config, from_dict, save_config, to_dict
from .data.prepare import TrainingData, make_loader, prepare_data, train_sampler, val_sampler
from .distributed import DistInfo, barrier, broadcast_object, cleanup, init_distributed
from .errors import UserError
from .losses import MultiTaskCriterion
from .metrics import MetricAccumulator
from .mixing import BatchMixer
from .model import create_model
from .optim import build_optimizer, build_scheduler
from .predictions import build_table, expand_derived, expand_targets, write_table
from .runs import (RunDirLock, check_resume_heads, check_resume_overrides, check_writable, discard_unsaved, fold_dirs,
                   make_run_dir, merge_fold_oof, remove_stale_temp_files, resolve_resume)
from .tracking import Tracker

SYNC_EVERY = 20


class TrainingStopped(UserError):
    """Training cannot go on (non-finite loss); the message names the step and the head."""


@dataclass
class Precision:
    device: torch.device
    dtype: torch.dtype | None

    @property
    def enabled(self) -> bool:
        return self.dtype is not None

    @property
    def scaler(self) -> bool:  # fp16 needs loss scaling; bf16 has fp32's range
        return self.dtype == torch.float16 and self.device.type == "cuda"

    @property
    def name(self) -> str:
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.dtype, "off")

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype or torch.float32, enabled=self.enabled)


def resolve_precision(amp: str, device: torch.device) -> Precision:
    if amp == "off":
        return Precision(device, None)
    if device.type == "cuda":
        if amp == "bf16" or (amp == "auto" and torch.cuda.is_bf16_supported()):
            return Precision(device, torch.bfloat16)
        return Precision(device, torch.float16)
    # CPU autocast is bf16; on CPUs with AVX-512 bf16 / AMX it is ~3x faster than fp32 with channels_last
    if amp == "auto" and not cpu_has_fast_bf16():
        return Precision(device, None)
    return Precision(device, torch.bfloat16)


def cpu_has_fast_bf16() -> bool:
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def pick_device(pref: str, info: DistInfo) -> torch.device:
    if pref == "auto":
        pref = "cuda" if torch.cuda.is_available() else "cpu"
    if pref == "cuda":
        if not torch.cuda.is_available():
            raise UserError("train.device: cuda requested but no GPU is visible; use train.device=cpu or auto")
        return torch.device("cuda", info.local_rank)
    return torch.device(pref)


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = not deterministic
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def resolve_monitor(cfg: Config) -> str:
    if cfg.train.monitor != "auto":
        return cfg.train.monitor
    trained = {h.name for h in cfg.trained_heads()}
    direct = set(cfg.composite) <= trained
    derived = any(h.derive == cfg.composite for h in cfg.trained_heads())
    return "val/composite/f1" if cfg.composite and (direct or derived) else "val/mean/f1"


# --------------------------------------------------------------------------------------------------- entry points
def config_for_resume(resume: str, overrides: list[str]) -> Config:
    """`multitask train --resume X` without --config: the checkpoint's own config (+ overrides).

    X may also be a k-fold run dir (with --folds all): its first fold's checkpoint holds the shared config."""
    path = Path(resume)
    if path.is_dir() and not (path / "last.pt").is_file():
        path = next((d / "last.pt" for d in fold_dirs(path) if (d / "last.pt").is_file()), path)
    path = resolve_resume(path)
    return from_dict(load_checkpoint(path)["config"], f"--resume {path}", overrides=overrides)


def preflight(cfg: Config) -> None:
    """Checks that need neither data nor a model: a typo fails in a second, before a run dir or image cache exists."""
    from .losses import HeadLoss
    from .model import check_backbone

    check_backbone(cfg.model.backbone)
    for head in cfg.trained_heads():
        HeadLoss(spec=head)   # raises on an unknown loss name
    weights = cfg.model.pretrained
    if isinstance(weights, str) and weights.strip() and not Path(weights).expanduser().is_file():
        raise UserError(f"model.pretrained: weights file not found: {weights}; give an existing .pth/.safetensors "
                        f"file, true (timm hub) or false")


def run_training(cfg: Config, *, resume: str | None = None, all_folds: bool = False) -> Path:
    """Train one run (or every fold); with `resume`, continue from its last.pt (a k-fold dir: every fold's)."""
    info = init_distributed(cfg.train.device)
    fresh: Path | None = None   # a run dir made by this call: removed again when it stops before any save
    lock: RunDirLock | None = None   # one training process per run dir (rank 0 holds it for the job)
    try:
        preflight(cfg)
        if all_folds:
            if resume:
                parent = Path(resume)
                if not parent.is_dir():
                    raise UserError(f"--resume {resume} --folds all: expected the k-fold run dir (holding fold0/, "
                                    f"fold1/, ...)")
            else:
                parent = fresh = broadcast_object(make_run_dir(cfg) if info.is_main else None, info)
            lock = RunDirLock(parent).acquire() if info.is_main else None
            for fold in range(cfg.data.n_folds):
                fold_cfg = copy.deepcopy(cfg)
                fold_cfg.data.fold = fold
                fold_dir = parent / f"fold{fold}"
                ckpt = None
                if resume and (fold_dir / "last.pt").is_file():   # folds without one start (again) from scratch
                    ckpt = load_checkpoint(fold_dir / "last.pt")
                    check_resume_heads(ckpt, fold_cfg, fold_dir / "last.pt")
                    check_resume_overrides(ckpt["config"], fold_cfg, fold_dir / "last.pt")
                fit(fold_cfg, fold_dir, info, ckpt)
            if info.is_main:
                merge_fold_oof(parent, cfg.data.n_folds)
            return parent
        ckpt = None
        if resume:
            path = resolve_resume(resume)
            lock = RunDirLock(path.parent).acquire() if info.is_main else None
            ckpt = load_checkpoint(path)
            check_resume_heads(ckpt, cfg, path)
            check_resume_overrides(ckpt["config"], cfg, path)
            run_dir = path.parent
        else:
            run_dir = fresh = broadcast_object(make_run_dir(cfg) if info.is_main else None, info)
            lock = RunDirLock(run_dir).acquire() if info.is_main else None
        fit(cfg, run_dir, info, ckpt)
        return run_dir
    except BaseException as err:   # whatever stopped it (bad input, a bug, Ctrl-C); a NaN stop keeps its run to inspect
        if fresh is not None and info.is_main and not isinstance(err, TrainingStopped):
            discard_unsaved(fresh)
        raise
    finally:
        if lock is not None:
            lock.release()
        cleanup(info)


# --------------------------------------------------------------------------------------------------- fit
def fit(cfg: Config, run_dir: Path, info: DistInfo = DistInfo(), ckpt: dict | None = None) -> dict:
    run_dir = Path(run_dir)
    device = pick_device(cfg.train.device, info)
    seed_everything(cfg.seed + info.rank, cfg.deterministic)
    precision = resolve_precision(cfg.train.amp, device)
    if info.is_main:
        check_writable(run_dir)   # now, not at the end of the first epoch
    tracker = Tracker(run_dir=run_dir, cfg=cfg, enabled=info.is_main,
                      resume_id=(ckpt or {}).get("tracker", {}).get("wandb_id"))
    if ckpt is not None and info.is_main:
        removed = remove_stale_temp_files(run_dir)
        if removed:
            tracker.print(f"removed {len(removed)} half-written file(s) left by the interrupted run: "
                          f"{', '.join(removed)}")
    try:
        return _fit(cfg, run_dir, info, ckpt, device, precision, tracker)
    finally:
        tracker.close()


def _fit(cfg, run_dir, info, ckpt, device, precision, tracker) -> dict:
    heads = cfg.trained_heads()
    tracker.print(f"[bold]multitask[/] {cfg.name} -> {run_dir}  ({cfg.model.backbone}, heads "
                  f"{', '.join(h.name for h in heads)}, {device}, amp {precision.name})")
    if ckpt is not None and finished(cfg, ckpt["state"]):
        tracker.print(f"nothing to train: this run already finished (epoch {ckpt['state']['epoch']} of "
                      f"{cfg.train.epochs}); raise train.epochs (or train.early_stop / train.max_steps) to go on")
        return {}
    # rank 0 first: it writes the synthetic set and the image cache once, the others then reuse them
    if info.enabled and not info.is_main:
        barrier(info)
    data = prepare_data(cfg, log=tracker.print)
    if info.enabled and info.is_main:
        barrier(info)
    if info.is_main:
        save_config(cfg, run_dir / "config.yaml")

    model = create_model(cfg).to(device)
    memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    criterion = MultiTaskCriterion(heads=heads, weighting=cfg.train.loss_weighting, class_counts=data.class_counts,
                                   dwa_temperature=cfg.train.dwa_temperature).to(device)
    optimizer = build_optimizer([model, criterion], cfg.train)
    sampler = train_sampler(data, cfg, rank=info.rank, world_size=info.world_size)
    pin = device.type == "cuda"
    workers = cfg.data.num_workers
    train_loader = make_loader(data.train_set, sampler, batch_size=cfg.train.batch_size, workers=workers,
                               train=True, pin_memory=pin)
    val_loader = make_loader(data.val_set, val_sampler(data, rank=info.rank, world_size=info.world_size),
                             batch_size=cfg.train.batch_size * 2, workers=workers, train=False, pin_memory=pin)
    steps_per_epoch = math.ceil(len(sampler) / cfg.train.batch_size / cfg.train.accum_steps)
    scheduler = build_scheduler(optimizer, cfg.train, steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.scaler)
    ema = None
    if cfg.train.ema.enabled:
        from timm.utils import ModelEmaV3
        ema = ModelEmaV3(model, decay=cfg.train.ema.decay, use_warmup=True)
    mixer = BatchMixer(train=cfg.train, seed=cfg.seed + info.rank)
    state = {"epoch": 0, "step": 0, "batch_in_epoch": 0, "best": None, "bad_epochs": 0}

    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        criterion.load_state_dict(ckpt["criterion"])
        if ema is not None and ckpt.get("ema") is not None:
            ema.module.load_state_dict(ckpt["ema"])
        state.update(ckpt["state"])
        mixer.rng.bit_generator.state = ckpt["mixer"]
        set_rng_state(ckpt["rng"])
        tracker.print(f"resumed from epoch {state['epoch']} step {state['step']} "
                      f"(batch {state['batch_in_epoch']} of the epoch)")

    net = model
    if info.enabled:
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    monitor = resolve_monitor(cfg)
    ctx = dict(cfg=cfg, run_dir=run_dir, info=info, model=model, criterion=criterion, optimizer=optimizer,
               scheduler=scheduler, scaler=scaler, ema=ema, mixer=mixer, state=state, tracker=tracker,
               batches_per_epoch=math.ceil(sampler.per_rank / cfg.train.batch_size))
    best_metrics: dict = {}
    for epoch in range(state["epoch"], cfg.train.epochs):
        sampler.set_epoch(epoch, start=state["batch_in_epoch"] * cfg.train.batch_size)
        train_metrics = train_one_epoch(net, train_loader, ctx, precision, device, epoch, steps_per_epoch)
        state["batch_in_epoch"] = 0
        state.pop("epoch_partial", None)
        state["epoch"] = epoch + 1
        metrics = dict(train_metrics)
        improved = False
        if (epoch + 1) % cfg.train.val_every == 0 or epoch + 1 == cfg.train.epochs:
            eval_model = ema.module if ema is not None else model
            val_metrics, acc = evaluate(eval_model, val_loader, criterion, heads, cfg, precision, device)
            metrics.update(val_metrics)
            if monitor not in metrics:
                raise UserError(f"train.monitor: '{monitor}' is not a logged metric; choose from "
                                f"{', '.join(k for k in metrics if k.startswith('val/'))}")
            value = metrics[monitor]
            improved = state["best"] is None or value > state["best"]
            if improved:
                state["best"], state["bad_epochs"] = value, 0
                best_metrics = dict(metrics)
            else:
                state["bad_epochs"] += 1
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(value)
            if info.is_main:
                log_confusions(tracker, acc, cfg, epoch)
                if improved:
                    write_oof(run_dir, data, acc, cfg, info)
        metrics["lr"] = optimizer.param_groups[0]["lr"]
        metrics.update({f"loss_weight/{k}": v for k, v in criterion.effective_weights().items()})
        criterion.epoch_end({h.name: train_metrics[f"train/{h.name}/loss"] for h in heads})
        tracker.log_epoch(epoch + 1, metrics)
        tracker.epoch_table(epoch + 1, metrics, [h.name for h in heads])
        if info.is_main:
            if improved:
                save(run_dir / "best.pt", ctx, metric=(monitor, state["best"]), resumable=False)
            save(run_dir / "last.pt", ctx, metric=(monitor, state["best"]))
        barrier(info)
        if cfg.train.early_stop and state["bad_epochs"] >= cfg.train.early_stop:
            tracker.print(f"early stop: {monitor} did not improve for {cfg.train.early_stop} epochs")
            break
        if cfg.train.max_steps and state["step"] >= cfg.train.max_steps:
            break
    if best_metrics:
        tracker.print(f"best {monitor} = {state['best']:.4f}; run dir {run_dir}")
    return best_metrics


# --------------------------------------------------------------------------------------------------- epochs
def train_one_epoch(net, loader, ctx, precision: Precision, device, epoch: int, steps_per_epoch: int) -> dict:
    cfg, state, criterion, optimizer = ctx["cfg"], ctx["state"], ctx["criterion"], ctx["optimizer"]
    scheduler, scaler, ema, mixer, info = ctx["scheduler"], ctx["scaler"], ctx["ema"], ctx["mixer"], ctx["info"]
    heads = cfg.trained_heads()
    accum, per_step_sched = cfg.train.accum_steps, not isinstance(scheduler,
                                                                  torch.optim.lr_scheduler.ReduceLROnPlateau)
    memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    net.train()
    sums = torch.zeros(len(heads) + 1, device=device)       # per-head loss sums, then the total
    first_bad = torch.full((), -1, dtype=torch.long, device=device)
    bad_heads = torch.zeros(len(heads), dtype=torch.bool, device=device)
    # the optimizer step as a device tensor: torch.tensor(step, device=cuda) each step would be a host->device copy
    # from pageable memory, which waits for the GPU to drain
    step_now = torch.full((), state["step"], dtype=torch.long, device=device)
    seen = 0
    params = [p for group in optimizer.param_groups for p in group["params"]]
    start_batch = state["batch_in_epoch"]
    partial = state.get("epoch_partial")
    if start_batch and partial:   # resumed mid-epoch: the epoch's loss means (and DWA after them) cover every batch
        sums = torch.tensor(partial["sums"], dtype=sums.dtype, device=device)
        seen = partial["seen"]
    with ctx["tracker"].progress(len(loader), f"epoch {epoch + 1}/{cfg.train.epochs}") as bar:
        for i, (images, targets) in enumerate(loader, start=start_batch):
            images = images.to(device, non_blocking=True).contiguous(memory_format=memory_format)
            targets = {k: v.to(device, non_blocking=True) for k, v in targets.items()}
            images, targets_b, lam = mixer(images, targets)
            last_micro = (i + 1) % accum == 0 or i + 1 == len(loader) + start_batch
            sync = contextlib.nullcontext() if last_micro or not info.enabled else net.no_sync()
            with sync:
                with precision.autocast():
                    outputs = net(images)
                total, head_losses = criterion(outputs, targets)
                if targets_b is not None:
                    total_b, head_b = criterion(outputs, targets_b)
                    total = lam * total + (1 - lam) * total_b
                    head_losses = {k: lam * v + (1 - lam) * head_b[k] for k, v in head_losses.items()}
                scaler.scale(total / accum).backward()
            stacked = torch.stack([head_losses[h.name] for h in heads] + [total.detach()])
            finite = torch.isfinite(stacked[:-1])
            # remember the heads of the FIRST bad step only: after it every head goes non-finite
            new_bad = (first_bad < 0) & ~finite.all()
            bad_heads = torch.where(new_bad, ~finite, bad_heads)
            first_bad = torch.where(new_bad, step_now, first_bad)
            sums += stacked.detach() * len(images)
            seen += len(images)
            if last_micro:
                if info.enabled:
                    sync_criterion_grads(criterion, info)
                if cfg.train.grad_clip:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(params, cfg.train.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                if per_step_sched:
                    scheduler.step()
                if ema is not None:
                    ema.update(ctx["model"], step=state["step"])
                state["step"] += 1
                step_now += 1
                state["batch_in_epoch"] = i + 1
            if i % SYNC_EVERY == 0 or i + 1 == len(loader) + start_batch:
                check_finite(first_bad, bad_heads, heads, scaler)
                bar.update(len(images), loss=float(total.detach()))
            else:
                bar.update(len(images))
            every = cfg.train.save_every_steps
            last_batch = i + 1 == len(loader) + start_batch   # the epoch's end writes last.pt anyway
            if last_micro and every and state["step"] % every == 0 and not last_batch and info.is_main:
                check_finite(first_bad, bad_heads, heads, scaler)  # name the head before refusing to save NaNs
                # this rank's sums; under DDP the other ranks resume from rank 0's, a close stand-in for theirs
                state["epoch_partial"] = {"sums": sums.tolist(), "seen": seen}
                save(ctx["run_dir"] / "last.pt", ctx, metric=(resolve_monitor(cfg), state["best"]))
            if cfg.train.max_steps and state["step"] >= cfg.train.max_steps:
                break
    check_finite(first_bad, bad_heads, heads, scaler)
    means = (sums / max(seen, 1))
    if info.enabled:
        dist.all_reduce(means)
        means /= info.world_size
    values = means.tolist()
    out = {f"train/{h.name}/loss": values[k] for k, h in enumerate(heads)}
    out["train/loss"] = values[-1]
    return out


def check_finite(first_bad: torch.Tensor, bad_heads: torch.Tensor, heads, scaler) -> None:
    """Stop on a non-finite loss, naming step and head; under fp16 loss scaling the scaler skips such steps."""
    if scaler.is_enabled():
        return
    step = int(first_bad)
    if step >= 0:
        names = [h.name for h, bad in zip(heads, bad_heads.tolist()) if bad]
        raise TrainingStopped(f"non-finite loss at optimizer step {step} in head(s) {', '.join(names)}; lower "
                              f"train.lr, set train.grad_clip, or check that head's labels and loss")


def sync_criterion_grads(criterion, info: DistInfo) -> None:
    """Learned loss weights live outside DDP's model, so average their gradients by hand."""
    for p in criterion.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= info.world_size


@torch.inference_mode()
def evaluate(model, loader, criterion, heads, cfg: Config, precision: Precision, device) -> tuple[dict, MetricAccumulator]:
    memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    model.eval()
    acc = MetricAccumulator(heads=heads, composite=cfg.composite_heads() or None)
    sums = torch.zeros(len(heads), device=device)
    counts = torch.zeros(len(heads), device=device)
    for images, targets in loader:
        images = images.to(device, non_blocking=True).contiguous(memory_format=memory_format)
        targets = {k: v.to(device, non_blocking=True) for k, v in targets.items()}
        with precision.autocast():
            outputs = model(images)
        _, head_losses = criterion(outputs, targets)
        for k, h in enumerate(heads):
            n = (targets[h.name] >= 0).sum()
            sums[k] += head_losses[h.name] * n
            counts[k] += n
        acc.update(outputs, targets)
    if dist.is_initialized():
        dist.all_reduce(sums)
        dist.all_reduce(counts)
    acc.sync()
    losses = (sums / counts.clamp(min=1)).tolist()
    metrics = {f"val/{k}": v for k, v in acc.compute().items()}
    metrics.update({f"val/{h.name}/loss": losses[k] for k, h in enumerate(heads)})
    model.train()
    return metrics, acc


# --------------------------------------------------------------------------------------------------- outputs
def log_confusions(tracker: Tracker, acc: MetricAccumulator, cfg: Config, epoch: int) -> None:
    every = cfg.tracking.confusion_every
    if not every or (epoch + 1) % every:
        return
    for head in cfg.trained_heads():
        tracker.log_confusion(head.name, acc.confusion(head.name), head.classes, step=epoch + 1)


def val_row_order(data: TrainingData, info: DistInfo) -> np.ndarray:
    """Row indices in the order the gathered validation predictions arrive (rank 0's shard, then rank 1's, ...)."""
    return np.concatenate([data.val_idx[r::info.world_size] for r in range(info.world_size)])


def write_oof(run_dir: Path, data: TrainingData, acc: MetricAccumulator, cfg: Config, info: DistInfo) -> None:
    """Out-of-fold predictions of the best epoch: the report's and the ensembler's input."""
    rows = val_row_order(data, info)
    heads, probs = expand_derived(acc.probabilities(), cfg.trained_heads(), cfg.heads)
    targets = expand_targets(acc.targets(), cfg.trained_heads(), cfg.heads)
    frame = data.frame.iloc[rows].reset_index(drop=True)
    meta = pd.DataFrame({"fold": frame["fold"]})
    for col in ("gender", "race", "mask", "stem"):
        if col in frame.columns:
            meta[col] = frame[col].to_numpy()
    if "age" in frame.columns and pd.api.types.is_numeric_dtype(frame["age"]):
        meta["age_years"] = frame["age"].to_numpy()
    composite = cfg.composite_heads() if all(h.name in probs for h in cfg.composite_heads()) else []
    table = build_table(ids=[Path(p).parent.name + "/" + Path(p).name for p in frame["path"]], paths=frame["path"],
                        heads=heads, probs=probs, targets=targets, composite=composite, meta=meta)
    table.insert(2, "group", frame["group"].to_numpy())
    write_table(table, run_dir / "oof.csv")


def finished(cfg: Config, state: dict) -> bool:
    """A resumed run that already ended (all epochs, early stop or max_steps) has nothing left to train."""
    return (state["epoch"] >= cfg.train.epochs and not state["batch_in_epoch"]
            or bool(cfg.train.early_stop and state["bad_epochs"] >= cfg.train.early_stop)
            or bool(cfg.train.max_steps and state["step"] >= cfg.train.max_steps))


def save(path: Path, ctx: dict, *, metric: tuple[str, float | None], resumable: bool = True) -> None:
    """last.pt carries everything to resume; best.pt only what inference needs (a third of the size).

    Never writes non-finite weights over a good checkpoint. A step checkpoint on the epoch's last batch is left to
    the epoch-end save that follows: resumed from, it would start an epoch with no batches left to train."""
    cfg, model, ema, state = ctx["cfg"], ctx["model"], ctx["ema"], ctx["state"]
    if state["batch_in_epoch"] >= ctx.get("batches_per_epoch", math.inf):
        return
    flags = [torch.isfinite(p).all() for p in model.parameters() if p.is_floating_point()]
    if flags and not bool(torch.stack(flags).all()):   # one device sync per save
        raise TrainingStopped(f"non-finite weights at optimizer step {state['step']} (a loss went NaN/inf); "
                              f"{path} keeps the last good state; lower train.lr or set train.grad_clip, then "
                              f"resume from it")
    payload = {
        "format": FORMAT, "version": VERSION,
        "config": to_dict(cfg),
        "trained_heads": [h.name for h in cfg.trained_heads()],
        "epoch": state["epoch"], "step": state["step"],
        "metric": {"name": metric[0], "value": metric[1]},
        "model": model.state_dict(),
        "ema": ema.module.state_dict() if ema is not None else None,
        "best": state["best"],
    }
    if resumable:
        payload.update(resumable_state(ctx))
    save_checkpoint(path, payload)


def resumable_state(ctx: dict) -> dict:
    return {
        "optimizer": ctx["optimizer"].state_dict(),
        "scheduler": ctx["scheduler"].state_dict(),
        "scaler": ctx["scaler"].state_dict(),
        "criterion": ctx["criterion"].state_dict(),
        "state": dict(ctx["state"]),
        "mixer": ctx["mixer"].rng.bit_generator.state,
        "rng": rng_state(),
        "tracker": {"wandb_id": ctx["tracker"].wandb_id},
    }
