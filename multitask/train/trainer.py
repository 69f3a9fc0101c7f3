"""The training loop around one TrainState, read top to bottom: epochs, batches, steps, epoch end.

    trainer = Trainer(cfg=cfg, run_dir=run_dir, info=info, precision=precision, tracker=tracker, callbacks=[...])
    best_metrics = trainer.fit(ckpt)          # ckpt: a resumable checkpoint to continue from, or None

`fit` loops over epochs, `train_epoch` over batches, `train_batch` hands the heads' losses to the weighting's
backward (which may be gradient-level: PCGrad, CAGrad), `optimizer_step` steps, `end_epoch` validates, logs and
saves. Callbacks (callbacks.py) watch or stop it. Per-step values stay on the device (no .item() on the hot path);
the loss is read back only every `SYNC_EVERY` steps for the progress bar and the non-finite check.
"""
from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Iterable

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from ..config import Config, save_config
from ..config.metric_names import scored_sources
from ..data.faces import write_plan
from ..data.fingerprint import fingerprint_change
from ..data.prepare import prepare_data
from ..data.sampling import make_loader, train_sampler, val_sampler
from ..runs.checkpoint import save_checkpoint
from ..runs.run_dir import BEST, CONFIG, CROPS, LAST
from ..tracking.tracker import Tracker
from ..utils.devices import Precision
from ..utils.distributed import DistInfo, barrier
from ..utils.errors import UserError
from .callbacks import Callback, CallbackList
from .distill import Teacher, attach_teacher
from .optim import group_lrs
from .state import TrainState, counters_finished
from .validate import evaluate, log_confusions, source_metrics, write_oof, write_teacher_table

SYNC_EVERY = 20


class TrainingStopped(UserError):
    """Training cannot go on (non-finite loss); the message names the step and the head."""


class Trainer:
    """The loop around one TrainState: data and loaders, epochs, steps, validation, checkpoints, callbacks."""

    def __init__(self, *, cfg: Config, run_dir: Path, info: DistInfo, precision: Precision, tracker: Tracker,
                 callbacks: Iterable[Callback] = (), teacher: Teacher | None = None, notes: Iterable[str] = ()):
        self.notes = list(notes)   # lines for the run's header (the normalisation and where it came from)
        self.cfg, self.run_dir, self.info, self.tracker = cfg, run_dir, info, tracker
        self.teacher = teacher   # train.distill: its probabilities join the targets (distill.py)
        self.precision, self.device = precision, precision.device
        self.callbacks = CallbackList(callbacks)
        self.heads = cfg.trained_heads()
        self.memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format

    def setup(self, ckpt: dict | None) -> None:
        cfg, info = self.cfg, self.info
        # rank 0 first: it writes the synthetic set and the image cache once, the others then reuse them
        if info.enabled and not info.is_main:
            barrier(info)
        self.data = prepare_data(cfg, log=self.tracker.print)
        attach_teacher(self.data, cfg, self.teacher, log=self.tracker.print)   # rank 0 fills the teacher's cache
        if info.enabled and info.is_main:
            barrier(info)
        if info.is_main:
            save_config(cfg, self.run_dir / CONFIG)
            if self.data.faces is not None:   # face-crop sources: the report shows what the model saw
                write_plan(self.data.faces, self.data.face_paths, self.run_dir / CROPS)
            if cfg.train.distill.teachers:
                write_teacher_table(self.run_dir, self.data, cfg)
        self.sampler = train_sampler(self.data, cfg, rank=info.rank, world_size=info.world_size)
        self.batches_per_epoch = math.ceil(self.sampler.per_rank / cfg.train.batch_size)
        state = TrainState.create(
            cfg, precision=self.precision, class_counts=self.data.class_counts, seed=cfg.seed + info.rank,
            steps_per_epoch=math.ceil(len(self.sampler) / cfg.train.batch_size / cfg.train.accum_steps))
        state.data = self.data.fingerprint
        if ckpt is not None:
            state.load_state_dict(ckpt)
            self.tracker.print(f"resumed from epoch {state.epoch} step {state.step} "
                               f"(batch {state.batch_in_epoch} of the epoch)")
            changed = fingerprint_change(ckpt.get("data"), state.data)
            if changed:   # only --resume-anyway gets here (runs/resume.py refuses otherwise)
                self.tracker.out.warn(f"resumed on other data than this run was saved with (--resume-anyway): "
                                      f"{changed}")
        pin, workers = self.device.type == "cuda", cfg.data.num_workers
        self.train_loader = make_loader(self.data.train_set, self.sampler, batch_size=cfg.train.batch_size,
                                        workers=workers, train=True, pin_memory=pin)
        self.val_loader = make_loader(self.data.val_set, val_sampler(self.data, rank=info.rank,
                                                                     world_size=info.world_size),
                                      batch_size=cfg.train.batch_size * 2, workers=workers, train=False,
                                      pin_memory=pin)
        self.attach(state)

    def attach(self, state: TrainState) -> None:
        """Train `state` from now on: its DDP wrapper, the weighting's gradient context, the clipped parameters.
        Alone (without `setup`) it gives `train_batch` + `optimizer_step` with no data, as a benchmark wants."""
        self.state = state
        self.net = state.model
        if self.info.enabled:
            self.net = DistributedDataParallel(state.model, device_ids=[self.device.index]
                                               if self.device.type == "cuda" else None)
        self.grad_ctx = state.grad_context(self.info.world_size)
        self.params = [p for group in state.optimizer.param_groups for p in group["params"]]

    # ----------------------------------------------------------------------------------------------- epochs
    def fit(self, ckpt: dict | None = None) -> dict:
        cfg = self.cfg
        self.tracker.print(f"[bold]multitask[/] {cfg.name} -> {self.run_dir}  ({cfg.model.backbone}, heads "
                           f"{', '.join(h.name for h in self.heads)}, {self.device}, amp {self.precision.name})")
        for note in self.notes:
            self.tracker.print(note)
        if ckpt is not None and counters_finished(cfg, ckpt["state"]):
            self.tracker.print(f"nothing to train: this run already finished (epoch {ckpt['state']['epoch']} of "
                               f"{cfg.train.epochs}); raise train.epochs (or train.early_stop / train.max_steps) "
                               f"to go on")
            return {}
        self.setup(ckpt)
        state, best_metrics, best_epoch = self.state, {}, None
        self.callbacks.on_fit_start(state)
        for epoch in range(state.epoch, cfg.train.epochs):
            self.set_trunk_frozen(epoch)
            self.callbacks.on_epoch_start(state, epoch)
            train_metrics = self.train_epoch(epoch)
            self.callbacks.on_train_epoch_end(state, train_metrics)
            metrics, improved = self.end_epoch(epoch, train_metrics)
            if improved:
                best_metrics, best_epoch = dict(metrics), epoch + 1   # the epoch best.pt holds
            self.callbacks.on_epoch_end(state, metrics)
            if self.should_stop():
                break
        if best_metrics:
            self.tracker.print(f"best {state.monitor} = {state.best:.4f}; run dir {self.run_dir}")
        # here only: a run stopped by an exception (a crash, Ctrl-C, a pruned trial) publishes no "best" artifacts
        self.tracker.publish_final(best_metrics, best_epoch, best_value=state.best)
        self.callbacks.on_fit_end(state, best_metrics)
        return best_metrics

    def set_trunk_frozen(self, epoch: int) -> None:
        """`train.freeze_trunk_epochs`: freeze or unfreeze the trunk at an epoch's start (the first, a resume, the
        switch); what the weighting and DDP see follows (a DDP wrapper registers the parameters needing gradients
        when it is built, so it is built again)."""
        state = self.state
        frozen = state.trunk_frozen(epoch)
        if frozen == all(not p.requires_grad for p in state.model.trunk.parameters()):
            return
        state.freeze_trunk(frozen)
        if frozen or epoch > 0:
            self.tracker.print(f"epoch {epoch + 1}: trunk {'frozen (heads only)' if frozen else 'unfrozen'}")
        self.attach(state)

    def should_stop(self) -> bool:
        """After an epoch: early stop or a callback's `state.stop` (said aloud), or the spent step budget."""
        state, t = self.state, self.cfg.train
        if state.stop is None and t.early_stop and state.bad_epochs >= t.early_stop:
            state.stop = f"early stop: {state.monitor} did not improve for {t.early_stop} epochs"
        if state.stop is not None:
            self.tracker.print(state.stop)
            return True
        return bool(t.max_steps and state.step >= t.max_steps)

    def train_epoch(self, epoch: int) -> dict:
        state, cfg = self.state, self.cfg
        start = state.batch_in_epoch   # > 0 when resumed mid-epoch: the sampler skips what was trained
        self.sampler.set_epoch(epoch, start=start * cfg.train.batch_size)
        end = start + len(self.train_loader)
        losses = EpochLosses(self.heads, self.device, step=state.step, partial=state.epoch_partial if start else None)
        state.epoch_images = 0
        state.train_mode(epoch)
        with self.tracker.progress(len(self.train_loader), f"epoch {epoch + 1}/{cfg.train.epochs}") as bar:
            for i, (images, targets) in enumerate(self.train_loader, start=start):
                last_micro = (i + 1) % cfg.train.accum_steps == 0 or i + 1 == end
                total, n = self.train_batch(images, targets, losses, sync=last_micro)
                if last_micro:
                    self.optimizer_step(batches_done=i + 1)
                    losses.stepped()
                if i % SYNC_EVERY == 0 or i + 1 == end:
                    losses.check(state.scaler)
                    bar.update(images=n, loss=float(total))
                else:
                    bar.update(images=n)
                if last_micro:
                    self.step_checkpoint(losses, last_batch=i + 1 == end)
                    self.callbacks.on_step_end(state)
                if cfg.train.max_steps and state.step >= cfg.train.max_steps:
                    break
        losses.check(state.scaler)
        return losses.means(self.info)

    # ----------------------------------------------------------------------------------------------- steps
    def train_batch(self, images, targets, losses: "EpochLosses", *, sync: bool) -> tuple[torch.Tensor, int]:
        """Forward, the heads' losses (mixed when MixUp/CutMix drew a partner), the weighting's backward."""
        state = self.state
        images = images.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        targets = {k: v.to(self.device, non_blocking=True) for k, v in targets.items()}
        images, targets_b, lam = state.mixer(images, targets)
        weighting = state.criterion.weighting
        # DDP reduces in the step's last backward; a gradient-level weighting reduces once itself (finish_step)
        reduce_now = sync and not weighting.gradient_level
        with contextlib.nullcontext() if reduce_now or not self.info.enabled else self.net.no_sync():
            with self.precision.autocast():
                outputs = self.net(images)
            head_losses = state.criterion.head_losses(outputs, targets)
            if targets_b is not None:
                other = state.criterion.head_losses(outputs, targets_b)
                head_losses = {k: lam * v + (1 - lam) * other[k] for k, v in head_losses.items()}
            total = weighting.backward(head_losses, self.grad_ctx)
        losses.add(head_losses, total, len(images))
        state.epoch_images += len(images)
        return total, len(images)

    def optimizer_step(self, *, batches_done: int) -> None:
        state, t = self.state, self.cfg.train
        state.criterion.weighting.finish_step(self.grad_ctx)
        if t.grad_clip:
            state.scaler.unscale_(state.optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, t.grad_clip)
        state.scaler.step(state.optimizer)
        state.scaler.update()
        state.optimizer.zero_grad(set_to_none=True)
        state.step += 1
        state.scheduler.after_step(state.step)
        if state.ema is not None:
            state.ema.update(state.model, step=state.step - 1)
        state.batch_in_epoch = batches_done

    def step_checkpoint(self, losses: "EpochLosses", *, last_batch: bool) -> None:
        """`train.save_every_steps`: last.pt within the epoch (the epoch's end writes it anyway)."""
        every = self.cfg.train.save_every_steps
        if not every or self.state.step % every or last_batch or not self.info.is_main:
            return
        losses.check(self.state.scaler)   # name the head before refusing to save NaNs
        # this rank's sums; under DDP the other ranks resume from rank 0's, a close stand-in for theirs
        self.state.epoch_partial = losses.partial()
        self.save(self.run_dir / LAST)

    # ----------------------------------------------------------------------------------------------- epoch end
    def end_epoch(self, epoch: int, train_metrics: dict) -> tuple[dict, bool]:
        """Validate (every `val_every` epochs and the last), track the best, log, save best.pt and last.pt."""
        state, cfg = self.state, self.cfg
        state.epoch, state.batch_in_epoch, state.epoch_partial = epoch + 1, 0, None
        metrics, improved = dict(train_metrics), False
        if (epoch + 1) % cfg.train.val_every == 0 or epoch + 1 == cfg.train.epochs:
            improved = self.validate(epoch, metrics)
        metrics.update(group_lrs(state.optimizer))
        metrics.update({f"loss_weight/{k}": v for k, v in state.criterion.effective_weights().items()})
        state.criterion.epoch_end({h.name: train_metrics[f"train/{h.name}/loss"] for h in self.heads})
        self.tracker.log_epoch(epoch + 1, metrics)
        self.tracker.epoch_table(epoch + 1, metrics, [h.name for h in self.heads],
                                 sources=scored_sources(s.name for s in self.data.sources))
        if self.info.is_main:
            if improved:
                self.save(self.run_dir / BEST, resumable=False)
            self.save(self.run_dir / LAST)
        barrier(self.info)
        return metrics, improved

    def validate(self, epoch: int, metrics: dict) -> bool:
        """Adds the validation metrics to `metrics`; True when the monitored value improved."""
        state, cfg = self.state, self.cfg
        val_metrics, scores = evaluate(state.eval_model, self.val_loader, state.criterion, self.heads, cfg,
                                       self.precision)
        metrics.update(val_metrics)
        metrics.update(source_metrics(scores, self.data, self.info))   # val/<source>/... with several sources
        monitor = state.monitor
        if monitor not in metrics:
            raise UserError(f"train.monitor: '{monitor}' is not a logged metric; choose from "
                            f"{', '.join(k for k in metrics if k.startswith('val/'))}")
        value = metrics[monitor]
        improved = state.best is None or value > state.best
        if improved:
            state.best, state.bad_epochs = value, 0
        else:
            state.bad_epochs += 1
        state.scheduler.after_validation(value)
        if self.info.is_main:
            log_confusions(self.tracker, scores, cfg, epoch)
            if improved:
                write_oof(self.run_dir, self.data, scores, cfg, self.info)
        return improved

    def save(self, path: Path, *, resumable: bool = True) -> None:
        """last.pt carries everything to resume; best.pt only what inference needs (a third of the size).

        Never writes non-finite weights over a good checkpoint. A step checkpoint on the epoch's last batch is left
        to the epoch-end save that follows: resumed from, it would start an epoch with no batches left to train."""
        state = self.state
        if state.batch_in_epoch >= self.batches_per_epoch:
            return
        flags = [torch.isfinite(p).all() for p in state.model.parameters() if p.is_floating_point()]
        if flags and not bool(torch.stack(flags).all()):   # one device sync per save
            raise TrainingStopped(f"non-finite weights at optimizer step {state.step} (a loss went NaN/inf); "
                                  f"{path} keeps the last good state; lower train.lr or set train.grad_clip, then "
                                  f"resume from it")
        state.wandb_id = self.tracker.wandb_id
        save_checkpoint(path, state.state_dict(resumable=resumable))


class EpochLosses:
    """An epoch's per-head and total loss sums, kept on the device, and the heads of its first non-finite step."""

    def __init__(self, heads, device: torch.device, *, step: int, partial: dict | None = None):
        self.heads = heads
        self.sums = torch.zeros(len(heads) + 1, device=device)   # per head, then the total
        self.seen = 0
        if partial:   # resumed mid-epoch: the epoch's loss means (and DWA after them) cover every batch
            self.sums = torch.tensor(partial["sums"], dtype=self.sums.dtype, device=device)
            self.seen = partial["seen"]
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)
        self.bad_heads = torch.zeros(len(heads), dtype=torch.bool, device=device)
        # the step as a device tensor: torch.tensor(step, device=cuda) each step would be a host->device copy from
        # pageable memory, which waits for the GPU to drain
        self.step_now = torch.full((), step, dtype=torch.long, device=device)

    def add(self, head_losses: dict[str, torch.Tensor], total: torch.Tensor, n: int) -> None:
        stacked = torch.stack([head_losses[h.name].detach() for h in self.heads] + [total.detach()])
        finite = torch.isfinite(stacked[:-1])
        # remember the heads of the FIRST bad step only: after it every head goes non-finite
        new_bad = (self.first_bad < 0) & ~finite.all()
        self.bad_heads = torch.where(new_bad, ~finite, self.bad_heads)
        self.first_bad = torch.where(new_bad, self.step_now, self.first_bad)
        self.sums += stacked * n
        self.seen += n

    def stepped(self) -> None:
        self.step_now += 1

    def check(self, scaler) -> None:
        """Stop on a non-finite loss, naming step and head; under fp16 loss scaling the scaler skips such steps."""
        if scaler.is_enabled():
            return
        step = int(self.first_bad)
        if step >= 0:
            names = [h.name for h, bad in zip(self.heads, self.bad_heads.tolist()) if bad]
            raise TrainingStopped(f"non-finite loss at optimizer step {step} in head(s) {', '.join(names)}; lower "
                                  f"train.lr, set train.grad_clip, or check that head's labels and loss")

    def partial(self) -> dict:
        return {"sums": self.sums.tolist(), "seen": self.seen}

    def means(self, info: DistInfo) -> dict[str, float]:
        means = self.sums / max(self.seen, 1)
        if info.enabled:
            dist.all_reduce(means)
            means /= info.world_size
        values = means.tolist()
        out = {f"train/{h.name}/loss": values[k] for k, h in enumerate(self.heads)}
        out["train/loss"] = values[-1]
        return out
