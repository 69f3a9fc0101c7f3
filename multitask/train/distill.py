"""Training from a teacher (train.distill): what the loop asks of one, and what it measures against it.

    fit(cfg, run_dir, teacher=teacher)   # teacher.py builds it from train.distill.teachers (fit does, if not given)

The teacher's probabilities join every row's targets once, before the first epoch (`attach_teacher`); the loss
(model/distill.py, in MultiTaskCriterion) then reads them from each batch, so sampling, MixUp, accumulation, DDP
shards and resume treat them as they treat labels. Validation adds `val/<head>/agreement` (student argmax ==
teacher argmax, on the rows the teacher speaks for) and the run dir gets teacher.csv (validate.py: the teacher's
predictions on the validation rows, which the report sets beside the student's).
"""
from __future__ import annotations

import random
from typing import Callable, Protocol

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist

from ..config import Config
from ..data.prepare import TrainingData, add_targets
from ..heads import HeadSpec
from ..model.distill import teacher_key
from ..utils.errors import UserError


class Teacher(Protocol):
    def targets(self, cfg: Config, frame: pd.DataFrame, *, log: Callable[[str], None]) -> dict[str, np.ndarray]:
        """{teacher_key(head): (N, C) probabilities} over `frame`'s rows; NaN rows where it has none."""


def attach_teacher(data: TrainingData, cfg: Config, teacher: Teacher | None, log: Callable[[str], None]) -> None:
    if not cfg.train.distill.teachers:
        return
    if teacher is None:
        raise UserError("train.distill.teachers is set but no teacher was given to the Trainer; build "
                        "it with multitask.train.teacher.teacher_for(cfg) (fit and run_training do)")
    # the teacher's forward passes (a loader draws a seed) must not move the run's random streams: a run is the same
    # whether its teacher's probabilities were computed now or read from the cache
    numpy_state, python_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=range(torch.cuda.device_count()) if torch.cuda.is_initialized() else []):
        targets = teacher.targets(cfg, data.frame, log=log)
    np.random.set_state(numpy_state)
    random.setstate(python_state)
    rows = data.train_idx
    for h in cfg.trained_heads():
        have = np.isfinite(targets[teacher_key(h.name)][rows]).all(1)
        if not have.any():
            why = ("out of fold, every member trained on all of them; set train.distill.out_of_fold=false or give "
                   "a teacher trained on other folds") if cfg.train.distill.out_of_fold else \
                "no member gives finite probabilities for it; retrain the teacher or leave out the member"
            raise UserError(f"train.distill: the teacher speaks for none of the {len(rows)} training images for head "
                            f"{h.name} ({why})")
    add_targets(data, cfg, targets)


class Agreement:
    """Per head: validation rows where the student's argmax is the teacher's, over the rows the teacher speaks for."""

    def __init__(self, heads: list[HeadSpec], device: torch.device):
        self.heads = heads
        self.counts = torch.zeros(len(heads), 2, device=device)

    def update(self, outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> None:
        for k, h in enumerate(self.heads):
            teacher = targets.get(teacher_key(h.name))
            if teacher is None:
                continue
            keep = torch.isfinite(teacher).all(-1)
            same = (outputs[h.name].argmax(-1) == teacher.argmax(-1)) & keep
            self.counts[k, 0] += same.sum()
            self.counts[k, 1] += keep.sum()

    def compute(self) -> dict[str, float]:
        if dist.is_initialized():
            dist.all_reduce(self.counts)
        return {f"{h.name}/agreement": agree / seen for h, (agree, seen) in zip(self.heads, self.counts.tolist())
                if seen > 0}


def agreement_names(cfg: Config) -> list[str]:
    return [f"{h.name}/agreement" for h in cfg.trained_heads()] if cfg.train.distill.teachers else []
