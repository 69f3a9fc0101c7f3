"""Knowledge distillation's loss term: a head learns a teacher's probabilities beside (or instead of) its labels.

    term = distill_kl(student_logits, teacher_probs, temperature=2.0)   # T² · KL(teacher_T ‖ student_T)
    loss = alpha * term + (1 - alpha) * own_loss                      # MultiTaskCriterion does this per head

The teacher's probabilities reach a batch as targets under `teacher_key(head)` ((N, C), NaN rows where no teacher
member may speak for the image); a years head's under `teacher_key(years_key(head))`, the distribution over its
years. Softening a probability vector by T is softmax(log p / T), what softmax(z / T) of its logits would give, so
an ensemble's merged probabilities soften like one model's logits. The T² keeps the gradient's scale as T changes
(Hinton et al. 2015).
"""
from __future__ import annotations

import torch
from torch import Tensor

TEACHER_PREFIX = "teacher/"


def teacher_key(name: str) -> str:
    """The batch key of a head's (or years output's) teacher probabilities."""
    return TEACHER_PREFIX + name


def is_teacher_key(key: str) -> bool:
    return key.startswith(TEACHER_PREFIX)


def soften(probs: Tensor, temperature: float) -> Tensor:
    """Log-probabilities of softmax(log p / T): the teacher's distribution at temperature T."""
    return (probs.float().clamp_min(1e-12).log() / temperature).log_softmax(-1)


def distill_kl(logits: Tensor, teacher: Tensor, *, temperature: float) -> Tensor:
    """T² · KL(teacher_T ‖ student_T), the mean over the rows that have a teacher (finite probabilities); a batch
    without any gives a zero that keeps the graph (DDP wants every parameter used). float32 under autocast."""
    keep = torch.isfinite(teacher).all(-1)
    if not bool(keep.any()):
        return logits.float().sum() * 0.0
    log_t = soften(teacher[keep], temperature)
    log_s = (logits.float()[keep] / temperature).log_softmax(-1)
    kl = (log_t.exp() * (log_t - log_s)).sum(-1).mean()
    return kl * temperature ** 2
