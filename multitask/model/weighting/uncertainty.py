"""Homoscedastic uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ...heads import HeadSpec
from .base import Weighting


class Uncertainty(Weighting):
    """Eq. 10, classification form. With s_k = log σ_k² learned per head: total = Σ exp(-s_k) · w_k · L_k + s_k / 2.

    The s_k / 2 term (= log σ_k) stops σ from growing without bound; s_k starts at 0, i.e. at the static weights.
    """

    def __init__(self, *, heads: list[HeadSpec], **_):
        super().__init__(heads=heads)
        self.log_vars = nn.Parameter(torch.zeros(len(heads)))

    def weights(self) -> Tensor:
        return self.static * torch.exp(-self.log_vars)

    def combine(self, losses: dict[str, Tensor]) -> Tensor:
        w = self.weights()
        return sum(w[i] * losses[n] + self.log_vars[i] / 2 for i, n in enumerate(self.names))
