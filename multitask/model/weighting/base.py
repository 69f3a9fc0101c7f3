"""What every multi-task weighting implements: combine the heads' losses, and own the backward pass.

    ctx = GradContext(shared=trunk_params, task=head_params, scaler=scaler, accum=2, world_size=1)
    total = weighting.backward(losses, ctx)   # each micro-batch; the detached total, for logging
    weighting.finish_step(ctx)                # last micro-batch, before unscale / clip / optimizer.step

Loss-level methods (static, uncertainty, DWA) only choose the weights of a sum and backpropagate it once.
Gradient-level methods (PCGrad, CAGrad; `gradient.py`) need each head's gradient on the shared trunk, so they
run their own backward passes and write the trunk's gradient themselves.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ...heads import HeadSpec


@dataclass
class GradContext:
    shared: list[nn.Parameter]        # the trunk: where the heads' gradients meet (and may conflict)
    task: list[nn.Parameter]          # the heads' own parameters: one loss alone reaches each
    scaler: torch.amp.GradScaler      # disabled unless fp16 on CUDA; scale() is then the identity
    accum: int = 1                    # micro-batches per optimizer step
    world_size: int = 1               # DDP ranks; > 1 means gradients must be averaged across them


class Weighting(nn.Module):
    """Σ w_k · L_k with the heads' static weights; subclasses change `weights`, `combine` or `backward`."""

    gradient_level = False   # True: the engine runs every micro-batch under DDP's no_sync (finish_step reduces)

    def __init__(self, *, heads: list[HeadSpec], **_):
        super().__init__()
        self.names = [h.name for h in heads]
        self.register_buffer("static", torch.tensor([float(h.weight) for h in heads]), persistent=False)

    def weights(self) -> Tensor:
        return self.static

    def combine(self, losses: dict[str, Tensor]) -> Tensor:
        w = self.weights()
        return sum(w[i] * losses[n] for i, n in enumerate(self.names))

    def forward(self, losses: dict[str, Tensor]) -> Tensor:
        return self.combine(losses)

    def backward(self, losses: dict[str, Tensor], ctx: GradContext) -> Tensor:
        total = self.combine(losses)
        ctx.scaler.scale(total / ctx.accum).backward()
        return total.detach()

    def finish_step(self, ctx: GradContext) -> None:
        """Learned weights live outside DDP's model, so their gradients are averaged here (DDP does the model's)."""
        if ctx.world_size > 1:
            for p in self.parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad /= ctx.world_size

    def effective_weights(self) -> dict[str, float]:
        return {n: float(w) for n, w in zip(self.names, self.weights().detach().cpu())}

    def epoch_end(self, mean_losses: dict[str, float]) -> None:
        pass
