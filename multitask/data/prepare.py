"""From a config to loaders: read the source, split by person, build the decode-once cache, datasets and samplers.

Determinism: the sampler draws its order from (seed, epoch) and hands every sample its own augmentation seed, so an
epoch is the same whether it runs uninterrupted, after `--resume`, or with any number of loader workers.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..config import Config
from ..heads import UNLABELLED, composite_encode, label_array, years_array, years_key
from ..utils.errors import UserError
from ..utils.progress import Progress
from .cache import ImageCache
from .competition import read_competition
from .dataset import MultiTaskDataset, collate_batch
from .faces import FacePlan, make_cropper
from .manifest import read_manifest
from .splits import assign_folds, split_indices
from .synthetic import ensure_synthetic
from .transforms import build_transforms


@dataclass
class TrainingData:
    frame: pd.DataFrame
    train_idx: np.ndarray
    val_idx: np.ndarray
    train_set: Dataset
    val_set: Dataset
    train_labels: dict[str, np.ndarray]       # all rows, training bins (+ "<head>/years" ages of years heads)
    val_labels: dict[str, np.ndarray]         # all rows, evaluation bins (+ the same ages)
    class_counts: dict[str, np.ndarray]       # on the training split
    notes: list[str] = field(default_factory=list)
    faces: FacePlan | None = None             # data.crop=face: each photo's box and whether it was a fallback


def load_frame(cfg: Config) -> tuple[pd.DataFrame, list[str]]:
    """The source's rows (one per image) and notes for the log."""
    data = cfg.data
    notes: list[str] = []
    if data.source == "manifest":
        frame = read_manifest(data.manifest, cfg.heads)
        notes.append(f"manifest {data.manifest}: {len(frame)} images, {frame['group'].nunique()} groups")
    else:
        if data.synthesize_if_missing:
            if ensure_synthetic(data.root, data.synth):
                notes.append(f"wrote the synthetic data set to {data.root} ({data.synth.people} people)")
        loaded = read_competition(data.root, label_fixes=data.label_fixes, on_conflict=data.on_conflict)
        frame = loaded.frame
        notes.append(loaded.summary())
    if data.limit:
        keep = frame["group"].drop_duplicates().iloc[: data.limit]
        frame = frame[frame["group"].isin(keep)].reset_index(drop=True)
    if frame.empty:
        raise UserError(f"data: no images left to train on (source {data.source}, root {data.root})")
    return frame.reset_index(drop=True), notes


def person_strata(frame: pd.DataFrame, cfg: Config) -> np.ndarray:
    """Stratify on the composite of the heads that are constant within a person (gender x age for the mask task)."""
    constant = []
    for spec in cfg.composite_heads():
        labels = label_array(spec, frame, cfg.heads, eval=True)
        if (pd.Series(labels).groupby(frame["group"].to_numpy()).nunique() <= 1).all():
            constant.append((spec, labels))
    if not constant:
        return np.zeros(len(frame), dtype=np.int64)
    specs = [s for s, _ in constant]
    return composite_encode({s.name: np.maximum(lab, 0) for s, lab in constant}, specs)


def prepare_data(cfg: Config, *, log: Callable[[str], None] = print) -> TrainingData:
    frame, notes = load_frame(cfg)
    data = cfg.data
    folds = assign_folds(frame["group"].to_numpy(), person_strata(frame, cfg), n_folds=data.n_folds, seed=cfg.seed)
    frame["fold"] = folds
    train_idx, val_idx = split_indices(folds, data.fold)
    height, width = data.image_size
    heads = cfg.trained_heads()
    train_labels = {h.name: label_array(h, frame, cfg.heads) for h in heads}
    val_labels = {h.name: label_array(h, frame, cfg.heads, eval=True) for h in heads}
    check_split(heads, train_labels, val_labels, train_idx, val_idx, cfg)   # before the cache: fails in a second
    for h in heads:
        if h.target == "years":   # the year losses' target and the MAE's truth, beside the classes
            train_labels[years_key(h.name)] = val_labels[years_key(h.name)] = years_array(h, frame)

    crop, faces = None, None
    if data.crop != "none":   # face boxes are detected once and stored beside the image cache
        with Progress("face boxes", stderr=True, transient=True) as bar:
            crop, faces = make_cropper(data, frame["path"].tolist(), cache_dir=data.cache_dir,
                                       workers=max(1, data.num_workers), progress=bar.report)
        if faces is not None:
            notes.append(faces.summary())
    cache = None
    if data.cache:
        cache = ImageCache.build(frame["path"].tolist(), height=height, width=width, cache_dir=data.cache_dir,
                                 on_bad_image=data.on_bad_image, workers=max(1, data.num_workers), crop=crop)
        if cache.bad:
            notes.append(f"skipped {len(cache.bad)} bad image(s) (data.on_bad_image=skip), e.g. "
                         f"{cache.bad[0][0]}: {cache.bad[0][1]}")
        valid = np.asarray(cache.valid, dtype=bool)
        train_idx, val_idx = train_idx[valid[train_idx]], val_idx[valid[val_idx]]
        check_split(heads, train_labels, val_labels, train_idx, val_idx, cfg)   # again, without skipped images
    class_counts = {}
    for h in heads:
        labels = train_labels[h.name][train_idx]
        class_counts[h.name] = np.bincount(labels[labels != UNLABELLED], minlength=h.num_classes)

    paths = frame["path"].tolist()
    common = dict(paths=paths, height=height, width=width, cache=cache, crop=crop)
    train_set = SeededView(MultiTaskDataset(labels=train_labels, transform=build_transforms(data, train=True),
                                            **common))
    val_set = SeededView(MultiTaskDataset(labels=val_labels, transform=build_transforms(data, train=False), **common))
    notes.append(f"fold {data.fold}/{data.n_folds}: {len(train_idx)} train / {len(val_idx)} val images, "
                 f"{frame['group'].iloc[train_idx].nunique()} / {frame['group'].iloc[val_idx].nunique()} people")
    for note in notes:
        log(note)
    return TrainingData(frame=frame, train_idx=train_idx, val_idx=val_idx, train_set=train_set, val_set=val_set,
                        train_labels=train_labels, val_labels=val_labels, class_counts=class_counts, notes=notes,
                        faces=faces)


def check_split(heads, train_labels: dict, val_labels: dict, train_idx: np.ndarray, val_idx: np.ndarray,
                cfg: Config) -> None:
    """Images on both sides of the split, and labels for every trained head on both: a head without validation
    labels has no metrics (nor train.monitor), which would otherwise surface only after a whole epoch."""
    fold = cfg.data.fold
    if len(train_idx) == 0 or len(val_idx) == 0:
        raise UserError(f"data: fold {fold} leaves {len(train_idx)} training and {len(val_idx)} validation "
                        f"images; need both > 0 (more people or fewer data.n_folds)")
    for h in heads:
        if not (train_labels[h.name][train_idx] != UNLABELLED).any():
            raise UserError(f"head {h.name}: no labelled training sample (column '{h.source}' missing or blank)")
        if not (val_labels[h.name][val_idx] != UNLABELLED).any():
            raise UserError(f"head {h.name}: no labelled image in validation fold {fold} of {cfg.data.n_folds} "
                            f"({len(val_idx)} images, column '{h.source}' blank for all); pick another data.fold, "
                            f"fewer data.n_folds, label more images for {h.name}, or train without it (--heads)")


class SeededView(Dataset):
    """Indexes a dataset by (row, augmentation seed) pairs from `EpochSampler`."""

    def __init__(self, dataset: MultiTaskDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, None)
        transform = getattr(self.dataset, "transform", None)
        if seed is not None and transform is not None and hasattr(transform, "set_random_state"):
            # One numpy and one python generator for the whole pipeline, each transform drawing from them in turn.
            # Compose.set_random_seed(seed) instead built a pair per transform, all seeded alike (slower too:
            # BENCHMARKS.md), and so made every transform roll the same first number: with hflip and color_jitter
            # both at p=0.5 an image was flipped exactly when it was jittered.
            transform.set_random_state(np.random.default_rng(seed), random.Random(seed))
        return self.dataset[index]


class EpochSampler(Sampler):
    """Rows of one split: shuffled (or weighted) per (seed, epoch), sharded across DDP ranks, resumable mid-epoch."""

    def __init__(self, *, indices: np.ndarray, seed: int, shuffle: bool, weights: np.ndarray | None = None,
                 rank: int = 0, world_size: int = 1, pad: bool = True):
        self.indices, self.seed, self.shuffle, self.weights = np.asarray(indices), seed, shuffle, weights
        self.rank, self.world_size, self.pad = rank, world_size, pad
        self.epoch, self.start = 0, 0
        self.per_rank = math.ceil(len(self.indices) / world_size) if pad else len(self.indices[rank::world_size])

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """`start` skips samples already consumed by this rank (mid-epoch resume)."""
        self.epoch, self.start = epoch, start

    def order(self) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.weights is not None:
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


def composite_sample_weights(labels: dict[str, np.ndarray], idx: np.ndarray, cfg: Config) -> np.ndarray:
    """1 / frequency of each row's composite class (or of the first trained head's class) on the training split."""
    comp = cfg.composite_heads()
    if all(h.name in labels for h in comp):
        key = composite_encode({h.name: labels[h.name][idx] for h in comp}, comp)
    else:
        key = labels[cfg.trained_heads()[0].name][idx]
    _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    return 1.0 / counts[inverse]


def make_loader(dataset: Dataset, sampler: EpochSampler, *, batch_size: int, workers: int, train: bool,
                pin_memory: bool) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      collate_fn=collate_batch,
                      pin_memory=pin_memory, drop_last=False, persistent_workers=workers > 0,
                      prefetch_factor=4 if workers > 0 else None,
                      # its own generator: creating iterators must not consume the global torch RNG (exact resume)
                      generator=torch.Generator().manual_seed(0))


def train_sampler(data: TrainingData, cfg: Config, *, rank: int, world_size: int) -> EpochSampler:
    weights = None
    if cfg.train.sampler == "weighted":
        weights = composite_sample_weights(data.train_labels, data.train_idx, cfg)
    return EpochSampler(indices=data.train_idx, seed=cfg.seed, shuffle=True, weights=weights, rank=rank,
                        world_size=world_size)


def val_sampler(data: TrainingData, *, rank: int, world_size: int) -> EpochSampler:
    # no padding: every validation image is scored exactly once across ranks
    return EpochSampler(indices=data.val_idx, seed=0, shuffle=False, rank=rank, world_size=world_size, pad=False)

