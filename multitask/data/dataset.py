"""A torch Dataset: (uint8 image tensor 3xHxW, {head: label}) per item, -1 where a head is unlabelled.

    labels = {h.name: label_array(h, frame, cfg.heads) for h in cfg.trained_heads()}
    ds = MultiTaskDataset(paths=list(frame.path), labels=labels, height=128, width=96,
                          transform=build_transforms(cfg.data, train=True), cache=cache)
    image, target = ds[0]     # torch.uint8 (3, 128, 96), {"mask": tensor(0), "gender": tensor(1), "age": tensor(2)}

Images stay uint8 until the model normalises them on the device (see transforms.py for why).
"""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np
import torch
from torch.utils.data import Dataset

from .cache import ImageCache
from .images import read_image, resize


class MultiTaskDataset(Dataset):
    def __init__(self, *, paths: list[str], labels: Mapping[str, np.ndarray], height: int, width: int,
                 transform: Callable | None = None, cache: ImageCache | None = None):
        self.paths = list(paths)
        self.labels = {name: np.asarray(values, dtype=np.int64) for name, values in labels.items()}
        for name, values in self.labels.items():
            assert values.shape == (len(self.paths),), \
                f"labels[{name!r}]: {values.shape[0] if values.ndim else 'scalar'} values for {len(self.paths)} paths"
        if cache is not None:
            assert len(cache) == len(self.paths), \
                f"cache has {len(cache)} rows for {len(self.paths)} paths; pass cache.subset(indices) for a split"
            assert (cache.height, cache.width) == (height, width), \
                f"cache holds {cache.height}x{cache.width} images, dataset wants {height}x{width}"
        self.height, self.width = height, width
        self.transform = transform
        self.cache = cache
        self._heads = list(self.labels)
        self._valid = cache.valid if cache is not None else None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self.cache is not None:
            if not self._valid[i]:  # the sampler must leave out rows the cache skipped as bad images
                raise ValueError(f"row {i} ({self.paths[i]}) is a bad image skipped by the cache; "
                                 f"sample only rows where cache.valid is True")
            image = self.cache[i]
        else:
            image = resize(read_image(self.paths[i]), self.height, self.width)
        if self.transform is not None:
            image = self.transform(image=image)["image"]
        # HWC -> CHW; ascontiguousarray copies, which also detaches the item from the read-only memory map
        pixels = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return pixels, {name: torch.tensor(self.labels[name][i]) for name in self._heads}
