"""A torch Dataset: (uint8 image tensor 3xHxW, {head: label}) per item, -1 where a head is unlabelled (and, when
distilling, "teacher/<head>": the teacher's probabilities, NaN where it has none for the image).

    labels = {h.name: label_array(h, frame, cfg.heads) for h in cfg.trained_heads()}
    ds = MultiTaskDataset(paths=list(frame.path), labels=labels, height=128, width=96,
                          transform=build_transforms(cfg.data, train=True), cache=cache)
    image, target = ds[0]     # torch.uint8 (3, 128, 96), {"mask": tensor(0), "gender": tensor(1), "age": tensor(2)}

Images stay uint8 until the model normalises them on the device (see transforms.py for why). An item's image is a
3xHxW view of HxWx3 pixels, i.e. already in channels_last memory order; `collate_batch` stacks items into an
N x 3 x H x W batch in channels_last memory with one copy, which is the layout the model trains in on both CPU and GPU.
The alternative (a transposing copy per item, a stack, then `.contiguous(memory_format=channels_last)` per batch)
moved every pixel three times.
"""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np
import torch
from torch.utils.data import Dataset

from .cache import ImageCache
from .faces import Cropper, read_pixels


class MultiTaskDataset(Dataset):
    def __init__(self, *, paths: list[str], labels: Mapping[str, np.ndarray], height: int, width: int,
                 transform: Callable | None = None, cache: ImageCache | None = None, crop: Cropper | None = None):
        self.paths = list(paths)
        # class indices as int64; ages in years (a years head's "age/years") stay float32, NaN = unknown
        self.labels = {name: np.asarray(values, dtype=np.float32 if np.issubdtype(np.asarray(values).dtype,
                                                                                  np.floating) else np.int64)
                       for name, values in labels.items()}
        for name, values in self.labels.items():   # one value per row, or one vector (a teacher's probabilities)
            assert values.ndim in (1, 2) and len(values) == len(self.paths), \
                f"labels[{name!r}]: {values.shape[0] if values.ndim else 'scalar'} values for {len(self.paths)} paths"
        if cache is not None:
            assert len(cache) == len(self.paths), \
                f"cache has {len(cache)} rows for {len(self.paths)} paths; pass cache.subset(indices) for a split"
            assert (cache.height, cache.width) == (height, width), \
                f"cache holds {cache.height}x{cache.width} images, dataset wants {height}x{width}"
        self.height, self.width = height, width
        self.transform = transform
        self.cache = cache
        self.crop = crop   # used without a cache; a cache holds its rows cropped already
        self._heads = list(self.labels)
        self._valid = cache.valid if cache is not None else None

    def __len__(self) -> int:
        return len(self.paths)

    def transform_at(self, i: int):
        """The augmentation pipeline row i goes through (SourceRows: its source's)."""
        return self.transform

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self.cache is not None:
            if not self._valid[i]:  # the sampler must leave out rows the cache skipped as bad images
                raise ValueError(f"row {i} ({self.paths[i]}) is a bad image skipped by the cache; "
                                 f"sample only rows where cache.valid is True")
            image = self.cache.read(i)   # a private copy: the file's pages stay out of this process's RSS
        else:
            image = read_pixels(self.paths[i], self.height, self.width, self.crop, i)
        if self.transform is not None:
            image = self.transform(image=image)["image"]
        if not (image.flags.writeable and image.flags.c_contiguous):   # e.g. a view a transform returned
            image = np.array(image, order="C")
        # a 3xHxW view of the HxWx3 pixels: channels_last strides, no transposing copy (collate_batch stacks them)
        pixels = torch.from_numpy(image).permute(2, 0, 1)
        return pixels, {name: torch.tensor(self.labels[name][i]) for name in self._heads}


class SourceRows(Dataset):
    """Several sources' datasets as one: row i of the run is row i - start of the source it falls in. Every source
    keeps its own pixels (cache, crop) and augmentation pipeline (`transform_at(i)`, which the sampler's seeded view
    drives)."""

    def __init__(self, parts: list[MultiTaskDataset]):
        assert parts, "SourceRows needs at least one source"
        self.parts = list(parts)
        self.starts = np.cumsum([0] + [len(p) for p in self.parts])

    def transform_at(self, i: int):
        """The augmentation pipeline row i goes through: its source's."""
        return self.parts[self._part(i)].transform

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, i: int):
        k = self._part(i)
        return self.parts[k][i - int(self.starts[k])]

    def _part(self, i: int) -> int:
        return int(np.searchsorted(self.starts, i, side="right")) - 1


def collate_batch(items: list[tuple[torch.Tensor, dict[str, torch.Tensor]]]) -> tuple[torch.Tensor, dict]:
    """Items -> (N x 3 x H x W uint8 in channels_last memory, {head: (N,) int64}); the pixels are copied once.

    In a loader worker the batch is built straight in shared memory (as torch's default collate does), so the trip
    to the main process copies nothing either.
    """
    images = [image.permute(1, 2, 0) for image, _ in items]      # HxWx3 views: contiguous for MultiTaskDataset items
    first = images[0]
    out = None
    if torch.utils.data.get_worker_info() is not None:
        storage = first._typed_storage()._new_shared(len(images) * first.numel(), device=first.device)
        out = first.new(storage).resize_(len(images), *first.shape)
    batch = torch.stack(images, 0, out=out).permute(0, 3, 1, 2)
    targets = {name: torch.stack([t[name] for _, t in items]) for name in items[0][1]}
    return batch, targets
