"""The data sources of a run, each read by its own reader, cut by its own crop, cached on its own, labelled only for
its own heads, and validated on its own fold.

    sources = read_sources(cfg, log)          # one Source per data.sources entry (or the one legacy source)
    frame = pd.concat([s.frame for s in sources])           # every row, with its `source` column
    labels = source_labels(sources, cfg, eval=False)        # {head: (N,)}; -1 where a source does not label a head

A source's `group` (person) is prefixed with its name when there are several (`utk:utk00012`): two sources' people
are never one person, and a bootstrap over people resamples each source's own. With one source nothing changes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..config import Config, SourceConfig
from ..heads import UNLABELLED, composite_encode, label_array, years_array, years_key
from ..utils.errors import UserError
from ..utils.progress import Progress
from .cache import ImageCache
from .competition import read_competition
from .crops import make_cropper
from .faces import Cropper, FacePlan
from .inputs import read_inputs
from .manifest import read_manifest
from .repeats import repeated_rows
from .splits import assign_folds
from .synthetic import ensure_synthetic


@dataclass
class Source:
    name: str
    cfg: SourceConfig                      # crop and crop_margin filled in (DataConfig.resolved_sources)
    frame: pd.DataFrame                    # its rows: path, group, head columns, metadata, source
    notes: list[str] = field(default_factory=list)
    crop: Cropper | None = None
    faces: FacePlan | None = None
    cache: ImageCache | None = None

    @property
    def people(self) -> int:
        return self.frame["group"].nunique()

    def labels(self, head) -> bool:
        """Whether this source labels `head` (its `heads:` list, or every head when it has none)."""
        return self.cfg.heads is None or head.name in self.cfg.heads or bool(
            head.derive and all(name in self.cfg.heads for name in head.derive))


def read_sources(cfg: Config) -> list[Source]:
    """Every source's rows, in config order; groups prefixed by the source's name when there are several."""
    resolved = cfg.data.resolved_sources()
    sources = [read_source(name, source, cfg) for name, source in resolved.items()]
    for source in sources:
        if len(sources) > 1:
            source.frame["group"] = source.name + ":" + source.frame["group"].astype(str)
        source.frame["source"] = source.name
    return sources


def read_source(name: str, source: SourceConfig, cfg: Config) -> Source:
    data = cfg.data
    notes = []
    if source.kind == "manifest":
        frame = read_manifest(source.path, cfg.heads)
        notes.append(f"manifest {source.path}: {len(frame)} images, {frame['group'].nunique()} groups")
    elif source.kind == "images":   # a folder or a CSV of photos without labels: each photo its own group
        try:
            found = read_inputs(source.path, {}).frame
        except UserError as err:   # its message names predict's --data
            raise UserError(f"data.sources.{name}.path: {str(err).replace(f'--data {source.path}: ', '')}") from None
        frame = pd.DataFrame({"path": found["path"], "group": found["image_id"].astype(str)})
        notes.append(f"unlabelled images {source.path}: {len(frame)} (they learn from the teacher alone)")
    else:
        if data.synthesize_if_missing and ensure_synthetic(source.root, data.synth):
            notes.append(f"wrote the synthetic data set to {source.root} ({data.synth.people} people)")
        loaded = read_competition(source.root, label_fixes=source.label_fixes, on_conflict=data.on_conflict)
        frame = loaded.frame
        notes.append(loaded.summary())
    if data.limit:
        keep = frame["group"].drop_duplicates().iloc[: data.limit]
        frame = frame[frame["group"].isin(keep)]
    if frame.empty:
        where = source.path if source.kind == "manifest" else source.root
        raise UserError(f"data: no images left to train on (source {name}, {source.kind} {where})")
    return Source(name=name, cfg=source, frame=frame.reset_index(drop=True), notes=notes)


def rows_and_folds(cfg: Config) -> tuple[list[Source], pd.DataFrame]:
    """The sources and every row of them with its `source` and `fold` (-1: training only): the split a run trains
    on, known before a pixel is decoded. A photo listed twice is refused across folds or dropped as a repeat
    (repeats.py: one line, in the first source's notes, says how many); a source left without rows (an unlabelled
    folder that only repeated training photos) is left out."""
    sources = read_sources(cfg)
    frame = pd.concat([s.frame for s in sources], ignore_index=True)
    frame["fold"] = source_folds(sources, cfg)
    unlabelled = np.concatenate([np.full(len(s.frame), s.cfg.kind == "images") for s in sources])
    keep, note = repeated_rows(frame, source_labels(sources, cfg, eval=False), unlabelled=unlabelled)
    if note is None:
        return sources, frame
    start = 0
    for source in sources:
        part = keep[start:start + len(source.frame)]
        start += len(part)
        source.frame = source.frame[part].reset_index(drop=True)
    sources = [s for s in sources if len(s.frame)]
    sources[0].notes.append(note)
    return sources, frame[keep].reset_index(drop=True)


# ----------------------------------------------------------------------------------------------- labels and folds
def source_labels(sources: list[Source], cfg: Config, *, eval: bool) -> dict[str, np.ndarray]:
    """{trained head: (N,) class indices over every source's rows}, -1 where a source does not label the head;
    plus `<head>/years` ages of a years head (NaN where unknown)."""
    out: dict[str, list[np.ndarray]] = {}
    for source in sources:
        n = len(source.frame)
        for head in cfg.trained_heads():
            labelled = source.labels(head)
            values = label_array(head, source.frame, cfg.heads, eval=eval) if labelled else np.full(n, UNLABELLED)
            out.setdefault(head.name, []).append(values.astype(np.int64))
            if head.target == "years":   # the year losses' target and the MAE's truth, beside the classes
                years = years_array(head, source.frame) if labelled else np.full(n, np.nan)
                out.setdefault(years_key(head.name), []).append(years)
    return {name: np.concatenate(parts) for name, parts in out.items()}


def source_folds(sources: list[Source], cfg: Config) -> np.ndarray:
    """(N,) fold of each row: each validated source split by person into its own data.n_folds folds (stratified on
    the heads constant within a person); -1 for a source that only trains."""
    folds = []
    for source in sources:
        n = len(source.frame)
        if not source.cfg.val:
            folds.append(np.full(n, -1, dtype=np.int64))
            continue
        groups = source.frame["group"].to_numpy()
        folds.append(assign_folds(groups, person_strata(source, cfg), n_folds=cfg.data.n_folds, seed=cfg.seed))
    return np.concatenate(folds)


def person_strata(source: Source, cfg: Config) -> np.ndarray:
    """Stratify on the composite of the heads that are constant within a person (gender x age for the mask task)."""
    frame = source.frame
    constant = []
    for spec in cfg.composite_heads():
        if not source.labels(spec):
            continue
        labels = label_array(spec, frame, cfg.heads, eval=True)
        if (pd.Series(labels).groupby(frame["group"].to_numpy()).nunique() <= 1).all():
            constant.append((spec, labels))
    if not constant:
        return np.zeros(len(frame), dtype=np.int64)
    specs = [s for s, _ in constant]
    return composite_encode({s.name: np.maximum(lab, 0) for s, lab in constant}, specs)


# ----------------------------------------------------------------------------------------------- pixels
def prepare_pixels(source: Source, cfg: Config) -> None:
    """The source's crop (face boxes detected once, stored beside the image cache) and its decode-once cache."""
    data = cfg.data
    height, width = data.image_size
    paths = source.frame["path"].tolist()
    workers = max(1, data.num_workers)
    if source.cfg.crop != "none":
        with Progress("face boxes", stderr=True, transient=True) as bar:
            source.crop, source.faces = make_cropper(source.cfg, data.image_size, paths=paths,
                                                     cache_dir=data.cache_dir, workers=workers, progress=bar.report)
        if source.faces is not None:
            source.notes.append(source.faces.summary())
    if data.cache:
        source.cache = ImageCache.build(paths, height=height, width=width, cache_dir=data.cache_dir,
                                        on_bad_image=data.on_bad_image, workers=workers, crop=source.crop)
        if source.cache.bad:
            bad = source.cache.bad
            source.notes.append(f"skipped {len(bad)} bad image(s) (data.on_bad_image=skip), e.g. {bad[0][0]}: "
                                f"{bad[0][1]}")


def summary_line(source: Source, cfg: Config, *, shared: int) -> str:
    """One line per source for the log: images, people, the heads it labels, its crop and its part of an epoch."""
    heads = [h.name for h in cfg.trained_heads() if source.labels(h)]
    crop = source.cfg.crop + (f" (margin {source.cfg.crop_margin:g})" if source.cfg.crop == "face" else "")
    share = (f"share {source.cfg.share:g}: {shared} images an epoch" if source.cfg.share is not None
             else f"{shared} images an epoch" if source.cfg.balance else "each image once an epoch")
    drawn = f", balanced by {source.cfg.balance}" if source.cfg.balance else ""
    augment = (", augment " + " ".join(f"{k} {v}" for k, v in source.cfg.augment.items())) if source.cfg.augment \
        else ""
    val = "" if source.cfg.val else ", training only"
    return (f"source {source.name}: {len(source.frame):,} images, {source.people:,} people, heads "
            f"{', '.join(heads) or 'none'}, crop {crop}, {share}{drawn}{augment}{val}")
