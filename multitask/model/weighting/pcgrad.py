"""PCGrad: gradient surgery for multi-task learning (Yu et al., NeurIPS 2020)."""
from __future__ import annotations

import torch
from torch import Tensor

from .gradient import GradientWeighting


class PCGrad(GradientWeighting):
    """Each head's gradient g_i loses its component along any other head's g_j it conflicts with (g_i·g_j < 0):
    g_i ← g_i − (g_i·g_j / ‖g_j‖²) g_j, over the other heads in a random order; the trunk gets Σ_i g_i.

    The order is drawn from a generator seeded by the step count (same on every rank, same after resume). Without
    conflicts the result is the static weighted sum. No branches on the dot products: a projection by
    min(dot, 0) keeps the step free of device-to-host syncs.
    """

    def combine_grads(self, grads: Tensor) -> Tensor:
        generator = torch.Generator().manual_seed(int(self.steps))
        projected = grads.clone()
        norms = (grads * grads).sum(1).clamp_min(1e-20)
        k = len(grads)
        for i in range(k):
            for j in torch.randperm(k, generator=generator).tolist():
                if j != i:
                    dot = (projected[i] * grads[j]).sum()
                    projected[i] -= dot.clamp(max=0) / norms[j] * grads[j]
        return projected.sum(0)
