"""MixUp / CutMix with mixed targets for every head: loss = lam * L(y_a) + (1 - lam) * L(y_b)."""
from __future__ import annotations

import numpy as np
import torch

from ..config import TrainConfig


class BatchMixer:
    def __init__(self, *, train: TrainConfig, seed: int):
        self.mixup, self.cutmix, self.prob = train.mixup, train.cutmix, train.mix_prob
        self.rng = np.random.default_rng(seed)

    @property
    def enabled(self) -> bool:
        return (self.mixup > 0 or self.cutmix > 0) and self.prob > 0

    def __call__(self, images: torch.Tensor, targets: dict[str, torch.Tensor]):
        """Returns (images, targets_b, lam); lam == 1.0 means no mixing this batch (targets_b is None)."""
        if not self.enabled or self.rng.random() >= self.prob:
            return images, None, 1.0
        perm = torch.from_numpy(self.rng.permutation(len(images))).to(images.device)
        use_cutmix = self.cutmix > 0 and (self.mixup <= 0 or self.rng.random() < 0.5)
        if use_cutmix:
            lam = float(self.rng.beta(self.cutmix, self.cutmix))
            h, w = images.shape[-2:]
            cut_h, cut_w = int(h * np.sqrt(1 - lam)), int(w * np.sqrt(1 - lam))
            cy, cx = int(self.rng.integers(h)), int(self.rng.integers(w))
            y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
            x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
            images = images.clone()
            images[..., y0:y1, x0:x1] = images[perm][..., y0:y1, x0:x1]
            lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)  # the area actually pasted
        else:
            lam = float(self.rng.beta(self.mixup, self.mixup))
            # uint8 images: mix in float, keep the dtype the model expects (it normalises on device)
            images = (images.float() * lam + images[perm].float() * (1 - lam))
        return images, {k: v[perm] for k, v in targets.items()}, lam
