"""Dynamic Weight Average (Liu, Johns & Davison, CVPR 2019, MTAN)."""
from __future__ import annotations

import torch
from torch import Tensor

from ...heads import HeadSpec
from .base import Weighting


class DynamicWeightAverage(Weighting):
    """λ_k(t) = K · softmax_k(r_k / T) with r_k = L_k(t-1) / L_k(t-2): a head whose loss falls slowly gets more weight.

    λ multiplies spec.weight, so equal descent rates give the static weights; the first two epochs (no history yet)
    use the static weights alone. The two past epochs' mean losses are buffers, so resume continues the schedule.
    """

    def __init__(self, *, heads: list[HeadSpec], temperature: float = 2.0, **_):
        super().__init__(heads=heads)
        self.temperature = temperature
        self.register_buffer("history", torch.zeros(2, len(heads)))   # rows: epoch t-2, epoch t-1
        self.register_buffer("epochs_seen", torch.zeros((), dtype=torch.long))

    def weights(self) -> Tensor:
        if int(self.epochs_seen) < 2:
            return self.static
        ratio = self.history[1] / self.history[0].clamp_min(1e-12)
        return self.static * len(self.names) * torch.softmax(ratio / self.temperature, dim=0)

    def epoch_end(self, mean_losses: dict[str, float]) -> None:
        missing = [n for n in self.names if n not in mean_losses]
        assert not missing, f"DWA needs every head's mean loss; missing {missing}"
        latest = torch.tensor([float(mean_losses[n]) for n in self.names], device=self.history.device)
        self.history.copy_(torch.stack([self.history[1], latest]))
        self.epochs_seen += 1
