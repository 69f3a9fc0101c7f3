"""Optimizers and per-step LR schedules by name (config strings -> small builders)."""
from __future__ import annotations

import math

import torch

from ..config import TrainConfig
from ..utils.errors import UserError


def param_groups(modules, weight_decay: float) -> list[dict]:
    """No weight decay on biases, norms and learned loss weights (1-d tensors), as timm does."""
    decay, no_decay = [], []
    for module in modules:
        for param in module.parameters():
            if param.requires_grad:
                (decay if param.ndim > 1 else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _fused(groups) -> dict:
    """Adam(W)'s fused kernel where every parameter lives on a device that has it (CPU, CUDA).

    On CPU torch otherwise steps parameter by parameter, several times slower (BENCHMARKS.md, `bench_micro.py`
    optimizer). Same update to float rounding (~1e-7).
    """
    devices = {p.device.type for g in groups for p in g["params"]}
    return {"fused": True} if devices and devices <= {"cpu", "cuda"} else {}


OPTIMIZERS = {
    "adamw": lambda groups, t: torch.optim.AdamW(groups, lr=t.lr, **_fused(groups)),
    "adam": lambda groups, t: torch.optim.Adam(groups, lr=t.lr, **_fused(groups)),
    "sgd": lambda groups, t: torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum,
                                             nesterov=t.nesterov and t.momentum > 0),
}


def build_optimizer(modules, train: TrainConfig) -> torch.optim.Optimizer:
    if train.optimizer not in OPTIMIZERS:
        raise UserError(f"train.optimizer: unknown '{train.optimizer}'; choose from {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[train.optimizer](param_groups(modules, train.weight_decay), train)


def _warmup_cosine(t: TrainConfig, total: int, warmup: int):
    floor = t.min_lr / t.lr

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    return factor


def _warmup_step(t: TrainConfig, steps_per_epoch: int, warmup: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return t.gamma ** ((step // steps_per_epoch) // max(1, t.step_size))
    return factor


def build_scheduler(optimizer, train: TrainConfig, steps_per_epoch: int):
    """Stepped once per optimizer step, except `plateau`, which the engine steps per epoch with the monitored value."""
    total = max(1, train.epochs * steps_per_epoch)
    warmup = int(train.warmup_epochs * steps_per_epoch)
    name = train.scheduler
    if name == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_cosine(train, total, warmup))
    if name == "step":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_step(train, steps_per_epoch, warmup))
    if name == "onecycle":
        # each phase needs at least a step or torch divides by zero on very short runs
        pct = min(0.5, max(0.25, warmup / total, 2.5 / total))
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=train.lr, total_steps=total, pct_start=pct)
    if name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=train.gamma,
                                                          patience=train.plateau_patience, min_lr=train.min_lr)
    if name == "none":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    raise UserError(f"train.scheduler: unknown '{name}'; choose from cosine, step, onecycle, plateau, none")
