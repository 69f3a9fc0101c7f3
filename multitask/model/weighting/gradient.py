"""The shared machinery of gradient-level weightings: each head's gradient on the trunk, then one combined gradient.

Per micro-batch, one backward per head through the trunk (`autograd.grad`, graph kept) fills a (heads × trunk
parameters) buffer, summed over the micro-batches of a step, so the method sees the whole step's gradients, as
without accumulation. The heads' own parameters get one plain backward of the weighted sum (a head's parameters are
reached by its loss alone, so there is nothing to combine there). At the step's end: under DDP one all-reduce of the
buffer and the heads' gradients together, then `combine_grads` turns the buffer into the trunk's gradient.

Under fp16 the buffer holds scaled gradients. PCGrad and CAGrad are positively homogeneous (scaling every head's
gradient by s scales the result by s), so the result is the scaled gradient GradScaler expects: its unscale_,
inf check and step-skipping work unchanged, and an inf in any head's gradient reaches the trunk's gradient.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from ...heads import HeadSpec
from .base import GradContext, Weighting


class GradientWeighting(Weighting):
    gradient_level = True

    def __init__(self, *, heads: list[HeadSpec], **_):
        super().__init__(heads=heads)
        self._grads: Tensor | None = None   # this step's (heads × trunk) gradients so far
        # steps taken: seeds any randomness, so ranks agree and a resumed run repeats the same choices
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def backward(self, losses: dict[str, Tensor], ctx: GradContext) -> Tensor:
        w = self.weights()
        scaled = [ctx.scaler.scale(w[k] * losses[n] / ctx.accum) for k, n in enumerate(self.names)]
        if ctx.shared:
            rows = [flatten(torch.autograd.grad(loss, ctx.shared, retain_graph=True, allow_unused=True), ctx.shared)
                    for loss in scaled]
            grads = torch.stack(rows)
        else:   # a frozen trunk (train.freeze_trunk_epochs): nothing shared to combine, the heads' backward alone
            grads = scaled[0].new_zeros((len(scaled), 0), dtype=torch.float32)
        self._grads = grads if self._grads is None else self._grads + grads
        if ctx.task:
            torch.autograd.backward(sum(scaled), inputs=ctx.task)
        return self.combine(losses).detach()

    def finish_step(self, ctx: GradContext) -> None:
        assert self._grads is not None, "finish_step without a backward this step"
        grads, self._grads = self._grads, None
        if ctx.world_size > 1:
            grads = _all_reduce_mean(grads, ctx)
        if ctx.shared:
            write_grads(self.combine_grads(grads), ctx.shared)
        self.steps += 1

    def combine_grads(self, grads: Tensor) -> Tensor:
        """(heads × n) per-head gradients -> the trunk's gradient (n)."""
        raise NotImplementedError


def flatten(grads, params) -> Tensor:
    """One float32 vector in the parameters' logical order; a parameter the loss does not reach contributes zeros."""
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1).float() for g, p in zip(grads, params)])


def write_grads(vector: Tensor, params) -> None:
    """Consecutive slices of `vector` into each parameter's .grad (made with empty_like where missing, which keeps
    the parameter's memory format, channels_last included)."""
    for p, chunk in zip(params, vector.split([p.numel() for p in params])):
        if p.grad is None:
            p.grad = torch.empty_like(p)
        p.grad.copy_(chunk.view(p.shape))


def _all_reduce_mean(grads: Tensor, ctx: GradContext) -> Tensor:
    """One all-reduce per step: the per-head trunk gradients and the heads' own gradients in one flat buffer."""
    task = [p for p in ctx.task if p.grad is not None]
    flat = torch.cat([grads.reshape(-1)] + [p.grad.reshape(-1).float() for p in task])
    dist.all_reduce(flat)
    flat /= ctx.world_size
    write_grads(flat[grads.numel():], task)
    return flat[:grads.numel()].view_as(grads)
