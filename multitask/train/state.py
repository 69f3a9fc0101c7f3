"""One typed training state: what a run trains and counts, and the checkpoint schema (its state_dict).

    state = TrainState.create(cfg, precision=precision, class_counts=counts, steps_per_epoch=n, seed=cfg.seed)
    save_checkpoint(run_dir / "last.pt", state.state_dict())               # resumable = everything
    save_checkpoint(run_dir / "best.pt", state.state_dict(resumable=False)) # inference only (a third of the size)
    state.load_state_dict(load_checkpoint(run_dir / "last.pt"))            # exact resume, RNG streams included

The engine reads and changes only this object; save, resume, the benchmarks and the tests all go through
`state_dict` / `load_state_dict`, so the schema is written in one place.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from timm.utils import ModelEmaV3

from ..config import Config, to_dict
from ..model.losses import MultiTaskCriterion
from ..model.net import MultiHeadNet, create_model
from ..model.weighting import GradContext
from ..runs.checkpoint import FORMAT, VERSION, rng_state, set_rng_state
from ..utils.devices import Precision
from .mixing import BatchMixer
from .optim import LrSchedule, build_optimizer, build_schedule

# the counters a checkpoint's "state" entry holds (a plain dict there, so older checkpoints keep loading)
COUNTERS = ("epoch", "step", "batch_in_epoch", "best", "bad_epochs", "epoch_partial")


@dataclass(eq=False)
class TrainState:
    cfg: Config
    model: MultiHeadNet
    criterion: MultiTaskCriterion
    optimizer: torch.optim.Optimizer
    scheduler: LrSchedule
    scaler: torch.amp.GradScaler
    mixer: BatchMixer
    ema: object | None = None            # timm ModelEmaV3, whose .module is the averaged copy
    epoch: int = 0                       # finished epochs
    step: int = 0                        # optimizer steps taken
    batch_in_epoch: int = 0              # batches of the current epoch already trained (a mid-epoch checkpoint)
    best: float | None = None            # best value of `monitor` so far
    bad_epochs: int = 0                  # validations since `best` last improved
    epoch_partial: dict | None = None    # a mid-epoch checkpoint's loss sums so far: the epoch's means cover all
    wandb_id: str | None = None          # so a resumed run continues the same wandb run
    data: dict | None = None             # the data's fingerprint (data/fingerprint.py): a resume checks it
    stop: str | None = None              # not saved: a reason to end after this epoch (early stop, a callback)
    epoch_images: int = 0                # not saved: images this rank trained on in the current epoch

    @classmethod
    def create(cls, cfg: Config, *, precision: Precision, class_counts: dict | None, steps_per_epoch: int,
               seed: int) -> "TrainState":
        device = precision.device
        memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
        model = create_model(cfg).to(device).to(memory_format=memory_format)
        t = cfg.train
        criterion = MultiTaskCriterion(heads=cfg.trained_heads(), weighting=t.loss_weighting,
                                       class_counts=class_counts, dwa_temperature=t.dwa_temperature,
                                       cagrad_c=t.cagrad_c,
                                       distill=(t.distill.alpha, t.distill.temperature) if t.distill.teachers
                                       else None).to(device)
        optimizer = build_optimizer(model, criterion, t)
        ema = None
        if t.ema.enabled:
            ema = ModelEmaV3(model, decay=t.ema.decay, use_warmup=True)
        return cls(cfg=cfg, model=model, criterion=criterion, optimizer=optimizer,
                   scheduler=build_schedule(optimizer, t, steps_per_epoch),
                   scaler=torch.amp.GradScaler(device.type, enabled=precision.scaler),
                   mixer=BatchMixer(train=t, seed=seed), ema=ema)

    @property
    def monitor(self) -> str:
        return self.cfg.monitored_metric()

    @property
    def eval_model(self) -> torch.nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def trunk_frozen(self, epoch: int) -> bool:
        """`train.freeze_trunk_epochs`: the first epochs train the heads alone."""
        return epoch < self.cfg.train.freeze_trunk_epochs

    def freeze_trunk(self, frozen: bool) -> None:
        """Heads only (frozen) or the whole net. Frozen trunk parameters need no gradient, so autograd stops at the
        heads (cheaper steps) and the optimizer skips them (no update, no weight decay, no moments yet: Adam's
        moments and bias correction start at the unfreeze); its batch norms stay in eval mode (see `train_mode`)."""
        for param in self.model.trunk.parameters():
            param.requires_grad_(not frozen)

    def train_mode(self, epoch: int) -> None:
        """model.train(), with a frozen trunk's batch-norm statistics (and dropout) kept as loaded; with
        `train.freeze_bn` the trunk's batch norms keep their loaded statistics the whole run (their scale and shift
        still learn): weights with batch norm folded into the convolutions carry identity statistics, which batch
        statistics in train mode would replace, and small batches give noisy ones."""
        self.model.train()
        if self.trunk_frozen(epoch):
            self.model.trunk.eval()
        elif self.cfg.train.freeze_bn:
            for module in self.model.trunk.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    module.eval()

    def counters(self) -> dict:
        return {k: getattr(self, k) for k in COUNTERS}

    def grad_context(self, world_size: int = 1) -> GradContext:
        """The trunk's and the heads' parameters as the weighting's backward sees them."""
        trainable = lambda module: [p for p in module.parameters() if p.requires_grad]  # noqa: E731
        return GradContext(shared=trainable(self.model.trunk), task=trainable(self.model.heads), scaler=self.scaler,
                           accum=self.cfg.train.accum_steps, world_size=world_size)

    def state_dict(self, *, resumable: bool = True) -> dict:
        """The checkpoint payload: the model rebuilds from it alone; `resumable` adds what training needs."""
        payload = {
            "format": FORMAT, "version": VERSION,
            "config": to_dict(self.cfg),
            "trained_heads": [h.name for h in self.cfg.trained_heads()],
            "epoch": self.epoch, "step": self.step,
            "metric": {"name": self.monitor, "value": self.best},
            "model": self.model.state_dict(),
            "ema": self.ema.module.state_dict() if self.ema is not None else None,
            "best": self.best,
            "data": self.data,
        }
        if resumable:
            payload.update({
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "criterion": self.criterion.state_dict(),
                "state": self.counters(),
                "mixer": self.mixer.rng.bit_generator.state,
                "rng": rng_state(),
                "tracker": {"wandb_id": self.wandb_id},
            })
        return payload

    def load_state_dict(self, ckpt: dict) -> None:
        """Everything `state_dict()` wrote (a resumable checkpoint), RNG streams last."""
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.criterion.load_state_dict(ckpt["criterion"])
        if self.ema is not None and ckpt.get("ema") is not None:
            self.ema.module.load_state_dict(ckpt["ema"])
        for key in COUNTERS:
            setattr(self, key, ckpt["state"].get(key, getattr(self, key)))
        self.wandb_id = (ckpt.get("tracker") or {}).get("wandb_id")
        self.mixer.rng.bit_generator.state = ckpt["mixer"]
        set_rng_state(ckpt["rng"])


def counters_finished(cfg: Config, counters: dict) -> bool:
    """A run that already ended (all epochs, early stop or max_steps) has nothing left to train."""
    return (counters["epoch"] >= cfg.train.epochs and not counters["batch_in_epoch"]
            or bool(cfg.train.early_stop and counters["bad_epochs"] >= cfg.train.early_stop)
            or bool(cfg.train.max_steps and counters["step"] >= cfg.train.max_steps))
