"""The optimizer and its learning-rate schedule, on timm's factories, with the controls fine-tuning needs.

    optimizer = build_optimizer(model, criterion, cfg.train)    # named groups: trunk layers, heads, loss weights
    schedule = build_schedule(optimizer, cfg.train, steps_per_epoch)
    schedule.after_step(state.step)                             # after every optimizer step
    schedule.after_validation(value)                            # after every validation (plateau)
    group_lrs(optimizer)                                        # {"lr/heads": ..., "lr/trunk.0": ...} for trackers

Parameter groups: the heads (and the loss weighting's learned weights) train at `train.lr`; the trunk at
`lr * trunk_lr_scale`, and with `layer_decay` each trunk layer (timm's group_matcher: stem, blocks, ..., last stage)
at `layer_decay` times the next deeper one's (timm's `param_groups_layer_decay`): pretrained low layers hold general
features and move least. No weight decay on biases and norms (1-d tensors). Every scale lives in the group's
`lr_scale`, which timm's schedulers multiply in at each update, so a schedule keeps the ratios.

Any optimizer name timm knows works (`timm.optim.list_optimizers()`). Adam(W) gets torch's fused kernel where every
parameter is on a device that has it: on CPU torch otherwise steps parameter by parameter, several times slower
(BENCHMARKS.md, `bench_micro.py` optimizer); timm's own `adamw` is torch's class, so fused is one keyword.
"""
from __future__ import annotations

import torch
from timm.optim import create_optimizer_v2, param_groups_layer_decay, param_groups_weight_decay
from timm.scheduler import create_scheduler_v2
from torch import nn

from ..config import TrainConfig
from ..config.choices import check_optimizer
from ..utils.errors import UserError

FUSED = ("adam", "adamw")   # names whose timm class is torch's Adam / AdamW (fused=True is theirs)


def param_groups(model: nn.Module, criterion: nn.Module | None, train: TrainConfig) -> list[dict]:
    """Named groups with `lr_scale` (module doc): trunk (per layer with layer_decay), heads, criterion."""
    trunk = model.trunk
    skip = trunk.no_weight_decay() if hasattr(trunk, "no_weight_decay") else ()
    if train.layer_decay is not None and train.layer_decay < 1:
        groups = param_groups_layer_decay(trunk, weight_decay=train.weight_decay, no_weight_decay_list=skip,
                                          layer_decay=train.layer_decay)
        layers = sorted({g["lr_scale"] for g in groups})   # stem first; a layer's decay and no-decay groups: one name
        for group in groups:
            group["name"] = f"trunk.{layers.index(group['lr_scale'])}"
    else:
        groups = [dict(g, lr_scale=1.0, name="trunk") for g in param_groups_weight_decay(trunk, train.weight_decay,
                                                                                        no_weight_decay_list=skip)]
    for group in groups:
        group["lr_scale"] = group.get("lr_scale", 1.0) * train.trunk_lr_scale
    groups += [dict(g, lr_scale=1.0, name="heads") for g in param_groups_weight_decay(model.heads, train.weight_decay)]
    rest = [p for name, p in model.named_parameters() if not name.startswith(("trunk.", "heads.")) and p.requires_grad]
    if criterion is not None:
        rest += [p for p in criterion.parameters() if p.requires_grad]
    if rest:   # learned loss weights (uncertainty weighting): full LR, never decayed
        groups.append({"params": rest, "weight_decay": 0.0, "lr_scale": 1.0, "name": "loss_weights"})
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, criterion: nn.Module | None, train: TrainConfig) -> torch.optim.Optimizer:
    check_optimizer(train.optimizer)
    groups = param_groups(model, criterion, train)
    name = train.optimizer.lower()
    if name == "sgd" and not (train.nesterov and train.momentum > 0):
        name = "momentum"   # timm: sgd is Nesterov momentum (which needs a momentum), momentum is plain
    extra = {}
    if name in FUSED:
        devices = {p.device.type for g in groups for p in g["params"]}
        extra = {"fused": True} if devices and devices <= {"cpu", "cuda"} else {}
    try:
        # weight decay is already per group (0 on 1-d tensors); filter_bias_and_bn would only regroup them
        return create_optimizer_v2(groups, opt=name, lr=train.lr, weight_decay=train.weight_decay,
                                   momentum=train.momentum, filter_bias_and_bn=False, **extra)
    except (ImportError, ModuleNotFoundError) as err:   # bnb*, fused* (apex) need packages this install lacks
        raise UserError(f"train.optimizer: '{train.optimizer}' needs a package that is not installed ({err}); "
                        f"choose one of torch's or timm's own (adamw, sgd, lamb, lion, adan, ...)") from None


def group_lrs(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """The current LR of each named group ({"lr": heads, "lr/heads", "lr/trunk", "lr/trunk.<layer>", ...})."""
    out = {}
    for group in optimizer.param_groups:
        out[f"lr/{group.get('name', 'group')}"] = group["lr"]
    out["lr"] = out.get("lr/heads", optimizer.param_groups[0]["lr"])
    return out


# ------------------------------------------------------------------------------------------------ schedules
class LrSchedule:
    """One interface over timm's schedulers (per optimizer update) and torch's OneCycle / ReduceLROnPlateau.

    Called after each optimizer step with the steps taken, and after each validation with the monitored value
    (only plateau uses it). Its state_dict goes into last.pt; the optimizer's groups carry the LRs themselves."""

    def __init__(self, name: str, impl):
        self.name, self.impl = name, impl

    def after_step(self, step: int) -> None:
        if self.name == "onecycle":
            self.impl.step()
        elif self.name not in ("plateau", "none"):
            self.impl.step_update(step)

    def after_validation(self, value: float) -> None:
        if self.name == "plateau":
            self.impl.step(value)

    def state_dict(self) -> dict:
        return {"name": self.name, "impl": self.impl.state_dict() if self.impl is not None else None}

    def load_state_dict(self, state: dict) -> None:
        if "name" not in state:   # torch's LambdaLR state, from before the schedules were timm's
            raise UserError("the checkpoint's LR schedule was saved by an older multitask and cannot be restored; "
                            "start a new run (its best.pt can be model.pretrained)")
        if state["name"] != self.name:
            raise UserError(f"the checkpoint's LR schedule is {state['name']!r}, the config's {self.name!r}")
        if self.impl is not None:
            self.impl.load_state_dict(state["impl"])


SCHEDULES = ("cosine", "tanh", "poly", "step", "plateau", "onecycle", "none")   # TrainConfig.scheduler's choices


def build_schedule(optimizer: torch.optim.Optimizer, train: TrainConfig, steps_per_epoch: int) -> LrSchedule:
    """cosine / tanh / poly / step: timm's, updated per optimizer step, with a linear warm-up from min_lr over
    warmup_epochs; plateau: cut by `gamma` after `plateau_patience` validations without improvement; onecycle:
    torch's (its own warm-up); none: constant."""
    name = train.scheduler
    if name not in SCHEDULES:
        raise UserError(f"train.scheduler: unknown '{name}'; choose from {', '.join(SCHEDULES)}")
    per_epoch = max(1, steps_per_epoch)
    total = max(1, train.epochs * per_epoch)
    if name in ("none", "plateau", "onecycle"):   # torch's and none: the groups' LRs carry their scales themselves
        for group in optimizer.param_groups:
            group["lr"] = train.lr * group.get("lr_scale", 1.0)
    if name == "none":
        return LrSchedule(name, None)
    if name == "plateau":
        return LrSchedule(name, torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=train.gamma, patience=train.plateau_patience, min_lr=train.min_lr))
    if name == "onecycle":
        warmup = int(train.warmup_epochs * per_epoch)
        # each phase needs at least a step or torch divides by zero on very short runs
        pct = min(0.5, max(0.25, warmup / total, 2.5 / total))
        return LrSchedule(name, torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[g["lr"] for g in optimizer.param_groups], total_steps=total, pct_start=pct))
    # timm multiplies epochs by updates_per_epoch itself (a fractional warm-up is fine: it compares t < warmup_t);
    # each update sets a group's LR to the schedule's value times its lr_scale. The decaying curves start after the
    # warm-up (warmup_prefix) and end with the run; step decays count from the first step.
    prefix = name != "step" and train.warmup_epochs > 0
    impl, _ = create_scheduler_v2(optimizer, sched=name, decay_epochs=train.step_size, decay_rate=train.gamma,
                                  num_epochs=max(train.epochs - train.warmup_epochs, 1 / per_epoch) if prefix
                                  else train.epochs,
                                  min_lr=train.min_lr, warmup_lr=train.min_lr, warmup_epochs=train.warmup_epochs,
                                  warmup_prefix=prefix, step_on_epochs=False, updates_per_epoch=per_epoch)
    return LrSchedule(name, impl)

