"""What the report reads: a run dir's oof.csv or a predictions table, with truth from --gt and ages from --data.

    p, default_out = load_predictions(run_dir="runs/quickstart/1")
    p, default_out = load_predictions(pred="out/predictions.csv", gt="data/synthetic/eval/gt.csv")
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from ...data.competition import read_competition
from ...data.ground_truth import gt_table, read_gt
from ...heads import HeadSpec, composite_decode
from ...metrics.table import COMPOSITE, COMPOSITE_HEADS, TRUE, load_table
from ...runs.run_dir import CONFIG, OOF
from ...utils.errors import UserError
from .predictions import Predictions


def load_predictions(*, run_dir=None, pred=None, gt=None, data=None) -> tuple[Predictions, Path]:
    if pred:
        source = Path(pred)
        if not source.is_file():
            raise UserError(f"--pred {source}: no such file; expected predictions.csv from `multitask predict`")
        default_out = source.parent / "report"
    elif run_dir:
        run = Path(run_dir)
        if not run.is_dir():
            raise UserError(f"report: run dir {run} not found; expected a folder like runs/<name>/<n>")
        source = run / OOF
        if not source.is_file():
            raise UserError(f"report: no oof.csv in {run}; run a training first (it writes the out-of-fold "
                            f"predictions there), or give --pred predictions.csv --gt gt.csv")
        default_out = run / "report"
    else:
        raise UserError("report: give a run dir, or --pred predictions.csv --gt gt.csv")
    table, heads, probs, targets, composite = load_table(
        source, expected=configured_classes(Path(run_dir)) if run_dir and not pred else None)
    notes: list[str] = []
    if gt:
        attach_gt(table, heads, targets, composite, gt, notes)
    elif not targets and f"{TRUE}{COMPOSITE}" not in table.columns:
        raise UserError(f"{source}: no true/<head> columns to score against; pass --gt gt.csv (ImageID plus ans or "
                        f"per-head columns)")
    if data:
        attach_ages(table, Path(data), notes)
    if not composite:
        notes.append(f"no composite label: the table names no composite heads ({COMPOSITE_HEADS} column)")
    elif not all(h.name in targets for h in composite) and f"{TRUE}{COMPOSITE}" in table.columns:
        for name, values in composite_decode(table[f"{TRUE}{COMPOSITE}"].to_numpy(np.int64), composite).items():
            targets.setdefault(name, values)
    return Predictions(table, heads, probs, targets, composite, source, notes), default_out


def configured_classes(run_dir: Path) -> dict[str, list[str]]:
    """Each head's classes as the run's config.yaml lists them ({} without one)."""
    path = run_dir / CONFIG
    try:
        heads = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("heads") or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError, AttributeError):
        return {}
    return {str(name): [str(c) for c in spec["classes"]] for name, spec in heads.items()
            if isinstance(spec, dict) and spec.get("classes")}


def attach_gt(table: pd.DataFrame, heads: list[HeadSpec], targets: dict, composite: list[HeadSpec], path,
              notes: list) -> None:
    """Replace the table's truth by the ground-truth file's (`multitask.data.ground_truth` rules); add its metadata."""
    truth = read_gt(path, table["image_id"].astype(str).tolist(), heads, composite)
    if truth.note():
        notes.append(truth.note())
    table.drop(columns=[c for c in table.columns if c.startswith(TRUE)], inplace=True)
    targets.clear()
    for name, values in truth.targets.items():
        targets[name] = values
        table[f"{TRUE}{name}"] = values
    if truth.composite is not None:
        table[f"{TRUE}{COMPOSITE}"] = truth.composite
    for column in truth.meta.columns:
        if column not in table.columns:
            table[column] = truth.meta[column].replace("", np.nan).to_numpy()


def attach_ages(table: pd.DataFrame, root: Path, notes: list) -> None:
    """age_years from a data root when the table lacks it: eval/gt.csv by ImageID, train folders by image."""
    if not root.is_dir():
        raise UserError(f"--data {root}: no such folder; expected the data root (e.g. data/synthetic)")
    if "age_years" in table.columns and table["age_years"].notna().all():
        return
    ages = pd.Series(np.nan, index=table.index)
    gt = root / "eval" / "gt.csv"
    if gt.is_file():
        rows = gt_table(gt, f"--data {root}: {gt.name}")
        if "age_years" in rows.columns:
            years = pd.to_numeric(rows["age_years"], errors="coerce")
            ages = ages.fillna(table["image_id"].astype(str).str.strip().map(years))
    if (root / "train" / "images").is_dir() and ages.isna().any():
        frame = read_competition(root, on_conflict="warn").frame
        keys = [Path(p).parent.name + "/" + Path(p).name for p in frame["path"]]
        ages = ages.fillna(table["image_id"].map(pd.Series(frame["age"].to_numpy(), index=keys)))
    if ages.notna().any():
        table["age_years"] = table["age_years"].fillna(ages) if "age_years" in table.columns else ages.to_numpy()
    else:
        notes.append(f"--data {root}: found no ages in years for these images")
