"""Which rows an epoch trains on and in what order: sources mixed by their shares, every draw seeded by (seed,
epoch), sharded across DDP ranks, resumable mid-epoch.

    sampler = train_sampler(data, cfg, rank=rank, world_size=world)   # each source's share of the epoch
    sampler.set_epoch(epoch, start=images_already_trained)
    loader = make_loader(data.train_set, sampler, batch_size=32, workers=2, train=True, pin_memory=False)

A source without a share gives each of its training images once an epoch, as concatenating its rows would; a source
with one gives share x T images, T = (the unshared sources' images) / (1 - the shares' sum), or all sources' images
when every one has a share: the epoch's length stays defined by the data. A source with enough images gives that
many without repeats; one with too few gives each image floor(k/n) or ceil(k/n) times.
"""
from __future__ import annotations

import math
import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..config import Config
from ..heads import composite_encode
from ..utils.errors import UserError
from .dataset import collate_batch


class SeededView(Dataset):
    """Indexes a dataset by (row, augmentation seed) pairs from `EpochSampler`."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, None)
        transform = self.dataset.transform_at(index)   # several sources: each row its own source's pipeline
        if seed is not None and transform is not None and hasattr(transform, "set_random_state"):
            # One numpy and one python generator for the whole pipeline, each transform drawing from them in turn.
            # Compose.set_random_seed(seed) instead built a pair per transform, all seeded alike (slower too:
            # BENCHMARKS.md), and so made every transform roll the same first number: with hflip and color_jitter
            # both at p=0.5 an image was flipped exactly when it was jittered.
            transform.set_random_state(np.random.default_rng(seed), random.Random(seed))
        return self.dataset[index]


class EpochSampler(Sampler):
    """Rows of one split: shuffled (or weighted) per (seed, epoch), sharded across DDP ranks, resumable mid-epoch.

    `parts`: (rows, count, weights) per source when sources have shares or a balance: each epoch draws `count` of
    its `rows` (draw(), in proportion to `weights` unless None), then shuffles them all together. Without parts every
    row comes once (or weighted), as before sources existed."""

    def __init__(self, *, indices: np.ndarray, seed: int, shuffle: bool, weights: np.ndarray | None = None,
                 rank: int = 0, world_size: int = 1, pad: bool = True,
                 parts: list[tuple[np.ndarray, int, np.ndarray | None]] | None = None):
        self.indices, self.seed, self.shuffle, self.weights = np.asarray(indices), seed, shuffle, weights
        self.rank, self.world_size, self.pad, self.parts = rank, world_size, pad, parts
        self.epoch, self.start = 0, 0
        length = sum(count for _, count, _ in parts) if parts else len(self.indices)
        self.per_rank = math.ceil(length / world_size) if pad else len(range(rank, length, world_size))

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """`start` skips samples already consumed by this rank (mid-epoch resume)."""
        self.epoch, self.start = epoch, start

    def order(self) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.parts:
            drawn = [draw(rows, count, np.random.default_rng([self.seed, self.epoch, 2, k]), weights)
                     for k, (rows, count, weights) in enumerate(self.parts)]
            order = np.concatenate(drawn)
            order = order[rng.permutation(len(order))]
        elif self.weights is not None:
            p = self.weights / self.weights.sum()
            order = self.indices[rng.choice(len(self.indices), size=len(self.indices), replace=True, p=p)]
        elif self.shuffle:
            order = self.indices[rng.permutation(len(self.indices))]
        else:
            order = self.indices
        if self.pad and len(order) % self.world_size:
            order = np.concatenate([order, order[: self.world_size - len(order) % self.world_size]])
        return order[self.rank::self.world_size]

    def __iter__(self):
        order = self.order()
        seeds = np.random.default_rng([self.seed, self.epoch, 1]).integers(0, 2**31 - 1, size=len(order))
        for i in range(self.start, len(order)):
            yield int(order[i]), int(seeds[i])

    def __len__(self) -> int:
        return self.per_rank - self.start


def draw(rows: np.ndarray, count: int, rng: np.random.Generator, weights: np.ndarray | None = None) -> np.ndarray:
    """`count` of `rows`: without repeats when there are enough, else each row floor(count/n) or ceil(count/n)
    times; with weights, `count` draws with replacement in proportion to them (train.sampler=weighted, a source's
    balance)."""
    n = len(rows)
    if weights is not None:
        return rows[rng.choice(n, size=count, replace=True, p=weights / weights.sum())]
    repeats, rest = divmod(count, n)
    return np.concatenate([np.tile(rows, repeats), rows[rng.permutation(n)[:rest]]])


def epoch_counts(data) -> list[int]:
    """Training images each source gives an epoch (module docstring): its own count without a share, else
    share x T."""
    rows = data.source_rows(data.train_idx)
    sizes = [len(rows[s.name]) for s in data.sources]
    shares = [s.cfg.share for s in data.sources]
    if all(share is None for share in shares):
        return sizes
    if all(share is not None for share in shares):
        total = sum(sizes)
    else:
        total = sum(n for n, share in zip(sizes, shares) if share is None) / (1 - sum(x for x in shares if x))
    counts = [n if share is None else max(1, round(share * total)) for n, share in zip(sizes, shares)]
    for source, n, count in zip(data.sources, sizes, counts):
        if count and not n:
            raise UserError(f"data.sources.{source.name}: share {source.cfg.share:g} but no training image (every "
                            f"image of it is in the validation fold?); give it val: false or more images")
    return counts


def composite_sample_weights(labels: dict[str, np.ndarray], idx: np.ndarray, cfg: Config) -> np.ndarray:
    """1 / frequency of each row's composite class (or of the first trained head's class) on the training split."""
    comp = cfg.composite_heads()
    if all(h.name in labels for h in comp):
        key = composite_encode({h.name: labels[h.name][idx] for h in comp}, comp)
    else:
        key = labels[cfg.trained_heads()[0].name][idx]
    return class_balance_weights(key)


def make_loader(dataset: Dataset, sampler: EpochSampler, *, batch_size: int, workers: int, train: bool,
                pin_memory: bool) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      collate_fn=collate_batch,
                      pin_memory=pin_memory, drop_last=False, persistent_workers=workers > 0,
                      prefetch_factor=4 if workers > 0 else None,
                      # its own generator: creating iterators must not consume the global torch RNG (exact resume)
                      generator=torch.Generator().manual_seed(0))


def class_balance_weights(classes: np.ndarray) -> np.ndarray:
    """1 / the frequency of each row's class; rows without the label (-1) weigh as one more class of their own."""
    _, inverse, counts = np.unique(classes, return_inverse=True, return_counts=True)
    return 1.0 / counts[inverse]


def train_sampler(data, cfg: Config, *, rank: int, world_size: int) -> EpochSampler:
    """Each source's share of the epoch (when any has one), weighted within it with train.sampler=weighted, or
    class-balanced for the head its `balance` names."""
    weights = None
    if cfg.train.sampler == "weighted":
        weights = composite_sample_weights(data.train_labels, data.train_idx, cfg)
    parts = None
    if any(s.cfg.share is not None or s.cfg.balance for s in data.sources):
        by_source = data.source_rows(data.train_idx)
        parts = []
        for source, count in zip(data.sources, epoch_counts(data)):
            at = by_source[source.name]
            rows = data.train_idx[at]
            if source.cfg.balance:
                part = class_balance_weights(data.train_labels[source.cfg.balance][rows])
            else:
                part = None if weights is None else weights[at]
            parts.append((rows, count, part))
    return EpochSampler(indices=data.train_idx, seed=cfg.seed, shuffle=True, weights=weights, rank=rank,
                        world_size=world_size, parts=parts)


def val_sampler(data, *, rank: int, world_size: int) -> EpochSampler:
    # no padding: every validation image is scored exactly once across ranks
    return EpochSampler(indices=data.val_idx, seed=0, shuffle=False, rank=rank, world_size=world_size, pad=False)

