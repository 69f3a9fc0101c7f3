"""From a config to loaders: read every source, split each by person, build their decode-once caches, one dataset
over all their rows, and the sampler that mixes them.

Determinism: the sampler draws its order from (seed, epoch) and hands every sample its own augmentation seed, so an
epoch is the same whether it runs uninterrupted, after `--resume`, or with any number of loader workers.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from torch.utils.data import Dataset

from ..config import Config
from ..heads import UNLABELLED, years_array
from ..utils.errors import UserError
from .dataset import MultiTaskDataset, SourceRows
from .faces import FacePlan
from .fingerprint import fingerprint_of
from .sampling import SeededView, epoch_counts
from .sources import Source, prepare_pixels, rows_and_folds, source_labels, summary_line
from .splits import split_indices
from .transforms import build_transforms


@dataclass
class TrainingData:
    frame: pd.DataFrame                       # every source's rows; `source` and `fold` columns
    train_idx: np.ndarray
    val_idx: np.ndarray
    train_set: Dataset
    val_set: Dataset
    train_labels: dict[str, np.ndarray]       # all rows, training bins (+ "<head>/years" ages of years heads)
    val_labels: dict[str, np.ndarray]         # all rows, evaluation bins (+ the same ages)
    class_counts: dict[str, np.ndarray]       # on the training split
    sources: list[Source] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    fingerprint: dict = field(default_factory=dict)   # fingerprint.py: what the run trains on, for its checkpoints

    @property
    def faces(self) -> FacePlan | None:
        """The face-crop sources' plans together (their rows only), for the run dir's crops.csv; None without one."""
        plans = [s.faces for s in self.sources if s.faces is not None]
        if not plans:
            return None
        return FacePlan(anchors=np.concatenate([p.anchors for p in plans]), source=sum((p.source for p in plans), []))

    @property
    def face_paths(self) -> list[str]:
        return [p for s in self.sources if s.faces is not None for p in s.frame["path"]]

    def years(self, head) -> np.ndarray:
        """(N,) ages in years for a head over every row (NaN where unknown), from each source's own columns."""
        return np.concatenate([years_array(head, s.frame) for s in self.sources])

    def row_ids(self, rows: np.ndarray) -> list[str]:
        """The image ids of predictions tables (oof.csv): folder/file, prefixed by the source's name for every
        source but the first (the main source's ids stay as they were before sources)."""
        frame, main = self.frame.iloc[rows], self.sources[0].name
        return [("" if source == main else f"{source}/") + Path(p).parent.name + "/" + Path(p).name
                for p, source in zip(frame["path"], frame["source"])]

    def source_rows(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """{source name: positions in `rows` that belong to it}, in config order."""
        names = self.frame["source"].to_numpy()[rows]
        return {s.name: np.flatnonzero(names == s.name) for s in self.sources}


def prepare_data(cfg: Config, *, log: Callable[[str], None] = print) -> TrainingData:
    data = cfg.data
    sources, frame = rows_and_folds(cfg)
    train_idx, val_idx = split_indices(frame["fold"].to_numpy(), data.fold)
    heads = cfg.trained_heads()
    train_labels = source_labels(sources, cfg, eval=False)
    val_labels = source_labels(sources, cfg, eval=True)
    check_split(heads, train_labels, val_labels, train_idx, val_idx, cfg)   # before the caches: fails in a second
    for source in sources:
        prepare_pixels(source, cfg)
    if data.cache:
        valid = np.concatenate([np.asarray(s.cache.valid, dtype=bool) for s in sources])
        train_idx, val_idx = train_idx[valid[train_idx]], val_idx[valid[val_idx]]
        check_split(heads, train_labels, val_labels, train_idx, val_idx, cfg)   # again, without skipped images
    class_counts = {}
    for h in heads:
        labels = train_labels[h.name][train_idx]
        class_counts[h.name] = np.bincount(labels[labels != UNLABELLED], minlength=h.num_classes)
    train_set = SeededView(datasets(sources, train_labels, cfg, train=True))
    val_set = SeededView(datasets(sources, val_labels, cfg, train=False))
    result = TrainingData(frame=frame, train_idx=train_idx, val_idx=val_idx, train_set=train_set, val_set=val_set,
                          train_labels=train_labels, val_labels=val_labels, class_counts=class_counts,
                          sources=sources, fingerprint=fingerprint_of(sources, frame, train_labels))
    counts = dict(zip([s.name for s in sources], epoch_counts(result)))
    for source in sources:
        result.notes += source.notes
        if len(sources) > 1:
            result.notes.append(summary_line(source, cfg, shared=counts[source.name]))
    result.notes.append(f"fold {data.fold}/{data.n_folds}: {len(train_idx)} train / {len(val_idx)} val images, "
                        f"{frame['group'].iloc[train_idx].nunique()} / {frame['group'].iloc[val_idx].nunique()} "
                        f"people")
    for note in result.notes:
        log(note)
    return result


def add_targets(data: TrainingData, cfg: Config, extra: dict[str, np.ndarray]) -> None:
    """More per-row targets beside the labels (a teacher's probabilities: (N, C) over every row), in both splits'
    datasets: each batch then carries them, through sampling, MixUp partners and DDP shards alike."""
    for name, values in extra.items():
        assert len(values) == len(data.frame), f"{name}: {len(values)} rows for {len(data.frame)}"
    data.train_labels.update(extra)
    data.val_labels.update(extra)
    data.train_set = SeededView(datasets(data.sources, data.train_labels, cfg, train=True))
    data.val_set = SeededView(datasets(data.sources, data.val_labels, cfg, train=False))


def datasets(sources: list[Source], labels: dict[str, np.ndarray], cfg: Config, *, train: bool) -> SourceRows:
    """One dataset over every source's rows: each source's own pixels (cache, crop) and training augmentation
    (data.augment with its own `augment` keys over it); validation images are only resized."""
    height, width = cfg.data.image_size
    shared = build_transforms(cfg.data, train=train)
    parts, start = [], 0
    for source in sources:
        rows = slice(start, start + len(source.frame))
        transform = shared
        if train and source.cfg.augment:
            transform = build_transforms(cfg.data, train=True, augment=cfg.data.source_augment(source.cfg))
        parts.append(MultiTaskDataset(paths=source.frame["path"].tolist(), labels={k: v[rows] for k, v in
                                                                                    labels.items()},
                                      height=height, width=width, transform=transform, cache=source.cache,
                                      crop=source.crop))
        start = rows.stop
    return SourceRows(parts)


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
