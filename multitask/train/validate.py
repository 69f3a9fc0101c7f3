"""The validation pass and what it leaves behind: metrics, confusion matrices, out-of-fold predictions.

    metrics, scores = evaluate(model, val_loader, criterion, heads, cfg, precision)
    write_oof(run_dir, data, scores, cfg, info)      # oof.csv of the best epoch
    write_teacher_table(run_dir, data, cfg)          # teacher.csv of a distilled run
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist

from ..config import Config, suggest
from ..config.metric_names import scored_sources, val_key
from ..data.prepare import TrainingData
from ..heads import expand_derived, expand_targets, years_source
from ..metrics.accumulator import MetricAccumulator, metric_names
from ..metrics.table import build_table
from ..model.distill import is_teacher_key, teacher_key
from ..runs.run_dir import OOF, TEACHER
from ..tracking.tracker import Tracker
from ..utils.devices import Precision
from ..utils.distributed import DistInfo
from ..utils.errors import UserError
from ..utils.io import write_csv
from .distill import Agreement, agreement_names


@torch.inference_mode()
def evaluate(model, loader, criterion, heads, cfg: Config, precision: Precision) -> tuple[dict, MetricAccumulator]:
    """Validation losses and metrics; the model is put back in the mode it came in (the EMA copy stays in eval)."""
    device = precision.device
    memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    was_training = model.training
    model.eval()
    scores = MetricAccumulator(heads=heads, composite=cfg.composite_heads() or None)
    agreement = Agreement(heads, device)
    sums = torch.zeros(len(heads), device=device)
    counts = torch.zeros(len(heads), device=device)
    for images, targets in loader:
        images = images.to(device, non_blocking=True).contiguous(memory_format=memory_format)
        targets = {k: v.to(device, non_blocking=True) for k, v in targets.items()}
        with precision.autocast():
            outputs = model(images)
        agreement.update(outputs, targets)
        # the heads' own losses: val/<head>/loss means the same with and without a teacher
        targets = {k: v for k, v in targets.items() if not is_teacher_key(k)}
        _, head_losses = criterion(outputs, targets)
        for k, h in enumerate(heads):
            n = (targets[h.name] >= 0).sum()
            sums[k] += head_losses[h.name] * n
            counts[k] += n
        scores.update(outputs, targets)
    if dist.is_initialized():
        dist.all_reduce(sums)
        dist.all_reduce(counts)
    scores.sync()
    losses = (sums / counts.clamp(min=1)).tolist()
    metrics = {val_key(k): v for k, v in {**scores.compute(), **agreement.compute()}.items()}
    metrics.update({val_key(f"{h.name}/loss"): losses[k] for k, h in enumerate(heads)})
    model.train(was_training)
    return metrics, scores


def val_metric_names(cfg: Config) -> list[str]:
    """Every validation key a run of this config can log (evaluate's, then source_metrics' per validated source when
    there are several). A source labelling fewer heads logs fewer of its keys: that shows only in the data, and the
    trainer checks the monitored value again at the first validation."""
    heads = cfg.trained_heads()
    keys = metric_names(heads, cfg.composite_heads())
    names = [val_key(k) for k in keys + agreement_names(cfg)] + [val_key(f"{h.name}/loss") for h in heads]
    sources = cfg.data.resolved_sources()
    names += [val_key(k, name) for name in scored_sources(sources) if sources[name].val for k in keys]
    return names


def check_monitor(cfg: Config) -> None:
    """train.monitor names a metric the heads will log: a typo (or a sweep choice never logged) stops before any
    training instead of after the first epoch."""
    monitor, names = cfg.monitored_metric(), val_metric_names(cfg)
    if monitor not in names:
        main = [n for n in names if "/f1_" not in n]
        raise UserError(f"train.monitor: '{monitor}' is not a metric this run logs{suggest(monitor, names)}; "
                        f"choose from {', '.join(main)} (or val/<head>/f1_<class>)")


# --------------------------------------------------------------------------------------------------- outputs
def log_confusions(tracker: Tracker, scores: MetricAccumulator, cfg: Config, epoch: int) -> None:
    every = cfg.tracking.confusion_every
    if not every or (epoch + 1) % every:
        return
    for head in cfg.trained_heads():
        tracker.log_confusion(head.name, scores.confusion(head.name), head.classes, step=epoch + 1)


def val_row_order(data: TrainingData, info: DistInfo) -> np.ndarray:
    """Row indices in the order the gathered validation predictions arrive (rank 0's shard, then rank 1's, ...)."""
    return np.concatenate([data.val_idx[r::info.world_size] for r in range(info.world_size)])


def source_metrics(scores: MetricAccumulator, data: TrainingData, info: DistInfo) -> dict[str, float]:
    """val/<source>/<key> for every source with validation rows, when the run has several: each head's metrics on
    the rows the source labels, the composite where it labels every composite head, its mean F1."""
    if not scored_sources(s.name for s in data.sources):
        return {}
    out = {}
    for name, rows in data.source_rows(val_row_order(data, info)).items():
        if len(rows):
            out.update({val_key(k, name): v for k, v in scores.subset(rows).compute().items()})
    return out


def write_oof(run_dir: Path, data: TrainingData, scores: MetricAccumulator, cfg: Config, info: DistInfo) -> None:
    """Out-of-fold predictions of the best epoch: the report's and the ensembler's input."""
    heads, probs = expand_derived(scores.probabilities(), cfg.trained_heads(), cfg.heads)
    targets = expand_targets(scores.targets(), cfg.trained_heads(), cfg.heads)
    table = rows_table(data, val_row_order(data, info), cfg, heads=heads, probs=probs, targets=targets,
                       years=scores.years())
    write_csv(table, run_dir / OOF)


def write_teacher_table(run_dir: Path, data: TrainingData, cfg: Config) -> None:
    """teacher.csv: the teacher's probabilities and the truth on the validation rows it speaks for (the
    predictions table, as oof.csv), for the report's student-against-teacher section."""
    heads, rows = cfg.trained_heads(), data.val_idx
    probs = {h.name: data.val_labels[teacher_key(h.name)][rows].astype(np.float64) for h in heads}
    keep = np.all([np.isfinite(p).all(1) for p in probs.values()], axis=0)
    table = rows_table(data, rows[keep], cfg, heads=heads, probs={k: v[keep] for k, v in probs.items()},
                       targets={h.name: data.val_labels[h.name][rows[keep]] for h in heads})
    write_csv(table, run_dir / TEACHER)


def rows_table(data: TrainingData, rows: np.ndarray, cfg: Config, *, heads, probs: dict, targets: dict,
               years: dict | None = None) -> pd.DataFrame:
    """The predictions table of `rows` of the run's data: ids, paths, people, the rows' metadata and ages."""
    frame = data.frame.iloc[rows].reset_index(drop=True)
    meta = pd.DataFrame({"fold": frame["fold"], "source": frame["source"]})
    for col in ("gender", "race", "mask", "stem"):
        if col in frame.columns:
            meta[col] = frame[col].to_numpy()
    for head in cfg.heads.values():   # ages in years (the competition's folders, a manifest's age_years)
        if head.bins and not head.derive:
            ages = data.years(head)[rows]
            if np.isfinite(ages).any():
                meta[years_source(head)] = ages
    composite = cfg.composite_heads() if all(h.name in probs for h in cfg.composite_heads()) else []
    table = build_table(ids=data.row_ids(rows), paths=frame["path"], heads=heads, probs=probs, targets=targets,
                        composite=composite, meta=meta, years=years)
    table.insert(2, "group", frame["group"].to_numpy())
    return table
