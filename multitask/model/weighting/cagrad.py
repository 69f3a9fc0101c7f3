"""CAGrad: conflict-averse gradient descent for multi-task learning (Liu et al., NeurIPS 2021)."""
from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import minimize
from torch import Tensor

from ...heads import HeadSpec
from .gradient import GradientWeighting


class CAGrad(GradientWeighting):
    """The update d = g0 + (c‖g0‖ / ‖g_w‖) g_w, rescaled by 1 / (1 + c²), where g0 is the heads' mean gradient and
    g_w = Σ w_k g_k with w on the simplex minimising w·(G g0) + c‖g0‖ ‖g_w‖ (the dual of: improve the worst head
    most while staying within c‖g0‖ of g0). c = 0 is plain gradient descent on the mean loss.

    The small problem needs only the heads' Gram matrix G Gᵀ (heads × heads), solved on the CPU with SLSQP. The
    result is multiplied by the number of heads, so with c = 0 it equals the static weighted sum's gradient and a
    learning rate tuned for static weighting carries over.
    """

    def __init__(self, *, heads: list[HeadSpec], cagrad_c: float = 0.4, **_):
        super().__init__(heads=heads)
        self.c = cagrad_c

    def combine_grads(self, grads: Tensor) -> Tensor:
        k = len(grads)
        gram = (grads @ grads.T).double().cpu().numpy()
        w = np.full(k, 1 / k)
        if self.c > 0 and np.isfinite(gram).all() and np.abs(gram).max() > 0:
            # solved on the Gram matrix scaled to max 1: the weights do not depend on the loss scale (fp16's
            # GradScaler, accumulation), which keeps the whole update positively homogeneous
            unit = gram / np.abs(gram).max()
            w = simplex_weights(unit, self.c * float(np.sqrt(max(unit.mean(), 0.0))))
        gw = (torch.as_tensor(w, dtype=grads.dtype, device=grads.device)[:, None] * grads).sum(0)
        g0 = grads.mean(0)
        lam = self.c * g0.norm() / gw.norm().clamp_min(1e-20)
        return (g0 + lam * gw) / (1 + self.c ** 2) * k


def simplex_weights(gram: np.ndarray, radius: float) -> np.ndarray:
    """argmin over the simplex of wᵀ(G g0) + radius · ‖Gᵀw‖, from the Gram matrix alone (G g0 = gram.mean(1))."""
    k = len(gram)
    b = gram.mean(1)

    def objective(w):
        return float(w @ b + radius * np.sqrt(max(w @ gram @ w, 0.0) + 1e-8))

    start = np.full(k, 1 / k)
    result = minimize(objective, start, bounds=[(0, 1)] * k,
                      constraints=({"type": "eq", "fun": lambda w: 1 - w.sum()},), method="SLSQP")
    w = np.clip(result.x if result.success else start, 0, None)
    return w / w.sum()
