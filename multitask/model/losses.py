"""Per-head losses and multi-task weighting, both chosen by name from config.

    criterion = MultiTaskCriterion(heads=cfg.trained_heads(), weighting="uncertainty", class_counts=counts)
    total, per_head = criterion(model(images), targets)   # per_head: {head: detached loss}
    optimizer.add_param_group({"params": list(criterion.parameters())})  # uncertainty's log-variances learn
    criterion.epoch_end(mean_train_losses)                               # DWA looks at the last two epochs
    total = criterion.weighting.backward(criterion.head_losses(outputs, targets), grad_context)   # training

A head's loss is a mix of registry entries (`LOSSES`, and `YEAR_LOSSES` for a head with `target: years`), e.g.
`loss: {ce: 0.3, f1: 0.7}` or `loss: {ldl: 1.0, ce: 0.3}`; the heads' losses are then
combined by a weighting strategy (`weighting.WEIGHTINGS`, which also owns the backward pass). Unlabelled targets (-1)
are dropped before any loss sees them, so a head without labels in a batch adds a zero that keeps the graph (DDP
wants every parameter used).
"""
from __future__ import annotations

import difflib
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config.registered import register_choice
from ..heads import LOSS_NAMES, UNLABELLED, YEAR_LOSS_NAMES, HeadSpec, years_key
from ..utils.errors import UserError
from .distill import distill_kl, teacher_key
from .weighting import WEIGHTINGS

LossFn = Callable[..., Tensor]


# ------------------------------------------------------------------------------------------------- per-head losses
def _labelled(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    # float32 even under autocast: log-softmax and the F1 ratios lose too much in bf16
    keep = target != UNLABELLED
    return logits.float()[keep], target[keep].long()


def _weighted_ce(logits: Tensor, target: Tensor, spec: HeadSpec, class_weights: Tensor | None,
                 gamma: float) -> Tensor:
    """Cross-entropy (with smoothing and class weights) scaled per sample by (1 - p_target)^gamma.

    Normalised like `F.cross_entropy(reduction="mean")`: by the summed weights of the targets, so gamma=0 is exactly
    cross-entropy. The denominator is clamped so a batch whose classes all weigh 0 gives 0, not NaN.
    """
    full = logits
    logits, target = _labelled(logits, target)
    if target.numel() == 0:
        return full.sum() * 0.0
    weight = None if class_weights is None else class_weights.to(logits.device, torch.float32)
    per_sample = F.cross_entropy(logits, target, weight=weight, label_smoothing=spec.label_smoothing,
                                 reduction="none")
    if gamma:
        p_target = logits.softmax(-1).gather(1, target[:, None]).squeeze(1)
        per_sample = per_sample * (1.0 - p_target).clamp_min(0.0).pow(gamma)
    denominator = weight[target].sum() if weight is not None else per_sample.new_tensor(float(len(target)))
    return per_sample.sum() / denominator.clamp_min(1e-12)


def cross_entropy(logits: Tensor, target: Tensor, *, spec: HeadSpec, class_weights: Tensor | None = None) -> Tensor:
    return _weighted_ce(logits, target, spec, class_weights, gamma=0.0)


def focal(logits: Tensor, target: Tensor, *, spec: HeadSpec, class_weights: Tensor | None = None) -> Tensor:
    """Focal loss (Lin et al. 2017): the class weights play alpha, spec.focal_gamma down-weights easy samples."""
    return _weighted_ce(logits, target, spec, class_weights, gamma=spec.focal_gamma)


def soft_f1(logits: Tensor, target: Tensor, *, spec: HeadSpec, class_weights: Tensor | None = None) -> Tensor:
    """1 - macro soft-F1 over all of the head's classes, from softmax probabilities vs one-hot targets; in [0, 1].

    Counts are expectations (tp = Σ p·y), so the score is differentiable. Class weights are not used: a macro
    average already gives every class the same say.
    """
    full = logits
    logits, target = _labelled(logits, target)
    if target.numel() == 0:
        return full.sum() * 0.0
    probs = logits.softmax(-1)
    onehot = F.one_hot(target, probs.shape[-1]).to(probs.dtype)
    tp = (probs * onehot).sum(0)
    fp = (probs * (1 - onehot)).sum(0)
    fn = ((1 - probs) * onehot).sum(0)
    f1 = 2 * tp / (2 * tp + fp + fn + 1e-8)
    return 1.0 - f1.mean()


LOSSES: dict[str, LossFn] = {"ce": cross_entropy, "focal": focal, "f1": soft_f1}
assert tuple(LOSSES) == LOSS_NAMES, "heads.LOSS_NAMES lists the class losses by name"


def register_loss(name: str, fn: LossFn, *, years: bool = False) -> None:
    """Make `name` a loss every head's mix may choose (`heads.<head>.loss: {name: share}`), validated as the
    built-in ones are.

    Args:
        name: the name configs use; a built-in name cannot be taken.
        fn: a class loss `fn(logits, target, *, spec, class_weights=None) -> scalar Tensor` over labelled rows (the
            -1 rows are dropped before it is called), or with `years`, `fn(year_logits, years, *, spec)`.
        years: a loss on a years head's year logits and ages in years (as ldl, l1_years)."""
    if name in LOSS_NAMES or name in YEAR_LOSS_NAMES:
        raise ValueError(f"register_loss: '{name}' is a built-in loss")
    register_choice("loss", name)
    (YEAR_LOSSES if years else LOSSES)[name] = fn


# ------------------------------------------------------------------------------------------------- year losses
# A years head's class losses above see its class log-probabilities (the year distribution summed over the bins);
# these see its year logits and the age in years (NaN = unknown: such rows train the class losses only).
def _known_years(year_logits: Tensor, years: Tensor) -> tuple[Tensor, Tensor]:
    keep = torch.isfinite(years)
    return year_logits.float()[keep], years.float()[keep]


def _year_grid(spec: HeadSpec, device) -> Tensor:
    return torch.as_tensor(spec.year_grid(), dtype=torch.float32, device=device)


def year_target(years: Tensor, spec: HeadSpec) -> Tensor:
    """(N, num_years) discretised Gaussian of sigma spec.years_sigma around each age, normalised over the head's
    years. An age outside years_range is clamped into it first (the target stays a peak at the nearest end)."""
    grid = _year_grid(spec, years.device)
    centre = years.float().clamp(spec.years_range[0], spec.years_range[1])[:, None]
    log_density = -0.5 * ((grid[None, :] - centre) / spec.years_sigma) ** 2
    return log_density.softmax(-1)


def label_distribution(year_logits: Tensor, years: Tensor, *, spec: HeadSpec) -> Tensor:
    """Label-distribution learning (Gao et al. 2017, DLDL): KL(target || predicted year distribution), the
    cross-entropy against the Gaussian target minus its (constant) entropy, so a perfect fit scores 0."""
    full = year_logits
    year_logits, years = _known_years(year_logits, years)
    if years.numel() == 0:
        return full.float().sum() * 0.0
    target = year_target(years, spec)
    return F.kl_div(year_logits.log_softmax(-1), target, reduction="batchmean")


def l1_years(year_logits: Tensor, years: Tensor, *, spec: HeadSpec) -> Tensor:
    """Mean |expected age - age| in years (DLDL-v2's expectation loss); years are large numbers next to the other
    losses, so give it a small share (e.g. 0.05)."""
    full = year_logits
    year_logits, years = _known_years(year_logits, years)
    if years.numel() == 0:
        return full.float().sum() * 0.0
    return (year_logits.softmax(-1) @ _year_grid(spec, years.device) - years).abs().mean()


YEAR_LOSSES: dict[str, LossFn] = {"ldl": label_distribution, "l1_years": l1_years}
assert tuple(YEAR_LOSSES) == YEAR_LOSS_NAMES, "heads.YEAR_LOSS_NAMES lists the year losses by name"


def _unknown(kind: str, key: str, name: str, valid) -> UserError:
    near = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.4)
    hint = f" (did you mean {near[0]}?)" if near else ""
    return UserError(f"{key}: unknown {kind} '{name}'{hint}; valid: {', '.join(valid)}")


class HeadLoss(nn.Module):
    """Σ share × LOSSES[name] over the head's loss mix."""

    def __init__(self, *, spec: HeadSpec, class_weights: Tensor | None = None):
        super().__init__()
        for name in spec.loss:
            if name not in LOSSES and name not in YEAR_LOSSES:
                raise _unknown("loss", f"heads.{spec.name}.loss", name, {**LOSSES, **YEAR_LOSSES})
        self.spec = spec
        # a buffer: moves with .to(device) and is saved, so a resumed run weighs classes as before
        self.register_buffer("class_weights", None if class_weights is None else
                             torch.as_tensor(class_weights, dtype=torch.float32))

    def forward(self, logits: Tensor, target: Tensor, year_logits: Tensor | None = None,
                years: Tensor | None = None) -> Tensor:
        """Class losses on `logits` vs class indices; year losses (a years head) on `year_logits` vs `years`."""
        total = logits.float().sum() * 0.0
        for name, share in self.spec.loss.items():
            if not share:
                continue
            if name in YEAR_LOSSES:
                assert year_logits is not None, f"heads.{self.spec.name}: loss {name} needs the year logits"
                if years is None:   # no ages in years at all (e.g. a manifest): the class losses train alone
                    years = torch.full(target.shape, float("nan"), device=target.device)
                total = total + share * YEAR_LOSSES[name](year_logits, years, spec=self.spec)
            else:
                total = total + share * LOSSES[name](logits, target, spec=self.spec,
                                                     class_weights=self.class_weights)
        return total


def class_weights_for(spec: HeadSpec, counts: np.ndarray | None) -> Tensor | None:
    """The head's class weights: None, a list from config, or 'auto' = inverse frequency of `counts`.

    'auto' weights are 1 / n_c scaled to mean 1 over the classes that occur. A class with no
    training sample gets weight 0: there is nothing to balance, and a guessed weight would only move the loss scale.
    """
    if spec.class_weights is None:
        return None
    if spec.class_weights == "auto":   # a list's values and any other word fail at the config (config/validate.py)
        if counts is None:
            raise UserError(f"heads.{spec.name}.class_weights: 'auto' needs the training class counts")
        counts = np.asarray(counts, dtype=np.float64)
        if counts.shape != (spec.num_classes,):
            raise UserError(f"heads.{spec.name}: {len(counts)} class counts for {spec.num_classes} classes")
        seen = counts > 0
        if not seen.any():
            raise UserError(f"heads.{spec.name}.class_weights: 'auto' but no labelled training sample")
        weights = np.zeros_like(counts)
        weights[seen] = 1.0 / counts[seen]
        weights[seen] /= weights[seen].mean()
        return torch.tensor(weights, dtype=torch.float32)
    return torch.tensor([float(w) for w in spec.class_weights], dtype=torch.float32)


# ------------------------------------------------------------------------------------------------- criterion
class MultiTaskCriterion(nn.Module):
    """One HeadLoss per trained head + a weighting strategy (`weighting/`), which also owns the backward pass.

    `criterion(outputs, targets)` -> (total, {head: detached loss}) for evaluation; training calls `head_losses` and
    hands them to `criterion.weighting.backward` (loss-level or gradient-level alike).
    """

    def __init__(self, *, heads: list[HeadSpec], weighting: str = "static",
                 class_counts: dict[str, np.ndarray] | None = None, dwa_temperature: float = 2.0,
                 cagrad_c: float = 0.4, distill: tuple[float, float] | None = None):
        super().__init__()
        assert heads, "MultiTaskCriterion needs at least one head"
        if weighting not in WEIGHTINGS:
            raise _unknown("weighting", "train.loss_weighting", weighting, WEIGHTINGS)
        counts = class_counts or {}
        self.head_names = [h.name for h in heads]
        self.losses = nn.ModuleDict({h.name: HeadLoss(spec=h, class_weights=class_weights_for(h, counts.get(h.name)))
                                     for h in heads})
        self.weighting = WEIGHTINGS[weighting](heads=heads, temperature=dwa_temperature, cagrad_c=cagrad_c)
        self.distill = distill   # (alpha, temperature): heads with teacher targets in the batch learn from them

    def head_losses(self, outputs: dict[str, Tensor], targets: dict[str, Tensor]) -> dict[str, Tensor]:
        """{head: loss} with the graph kept, for the weighting's backward. When distilling, a head whose teacher
        probabilities are in `targets` gets alpha · T² · KL(teacher_T ‖ student_T) + (1 - alpha) · its own loss: the
        KL over every row with a teacher, its own loss over its labelled rows, so a row without the head's label
        learns that head from the teacher alone."""
        missing = [n for n in self.head_names if n not in outputs or n not in targets]
        assert not missing, f"outputs and targets need every trained head; missing {missing}"
        losses = {n: self.losses[n](outputs[n], targets[n], outputs.get(years_key(n)), targets.get(years_key(n)))
                  for n in self.head_names}
        if self.distill is None:
            return losses
        alpha, temperature = self.distill
        for n in self.head_names:
            # a years head distils its year distribution when the teacher has one, else its classes
            key = years_key(n) if teacher_key(years_key(n)) in targets else n
            if teacher_key(key) in targets:
                term = distill_kl(outputs[key], targets[teacher_key(key)], temperature=temperature)
                losses[n] = alpha * term + (1 - alpha) * losses[n]
        return losses

    def forward(self, outputs: dict[str, Tensor], targets: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        losses = self.head_losses(outputs, targets)
        return self.weighting(losses), {n: loss.detach() for n, loss in losses.items()}

    def effective_weights(self) -> dict[str, float]:
        return self.weighting.effective_weights()

    def epoch_end(self, mean_losses: dict[str, float]) -> None:
        self.weighting.epoch_end(mean_losses)
