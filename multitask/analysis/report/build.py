"""Per-head error analysis: why does a model miss, and would the leaderboard agree with validation?

    multitask report runs/quickstart/1                                  # the run's out-of-fold predictions (oof.csv)
    multitask report --pred out/predictions.csv --gt data/synthetic/eval/gt.csv
    multitask report runs/quickstart/1 --log wandb,tensorboard           # also push figures and numbers to trackers
    python scripts/error_report.py runs/quickstart/1 --out /tmp/report

Writes report.html (self-contained), report.md (+ PNG files), report.json (every number) and label_noise_suspects.csv
(label-fix format id,field,value,image) into the output folder. Input is the predictions table of
`multitask.metrics.table`; anything that cannot be computed (a head without labels, no ages in years, no metadata) is
skipped and named in the page, so a report always comes out.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from ...data.ground_truth import gt_table, read_gt
from ...heads import HeadSpec, composite_decode
from ...metrics.table import COMPOSITE, COMPOSITE_HEADS, TRUE, load_table
from ...tracking.tracker import Tracker
from ...utils.errors import UserError
from ...utils.io import atomic_write
from . import figures as figs
from .analyses import Predictions, analyse_age, analyse_breakdowns, analyse_composite, analyse_head, analyse_label_noise
from .crops import analyse_crops
from .html import Figure, Section, Table, fmt, render_html, render_markdown

NOISE_THRESHOLD = 0.9
TRACKERS = ("wandb", "tensorboard")


# ----------------------------------------------------------------------------------------------------- entry point
def build_report(*, run_dir=None, pred=None, gt=None, out=None, data=None, log=(),
                 noise_threshold: float = NOISE_THRESHOLD) -> Path:
    """Analyse one predictions table and write the report folder; returns the folder."""
    unknown = [t for t in log if t not in TRACKERS]
    if unknown:
        raise UserError(f"--log {','.join(log)}: unknown tracker(s) {', '.join(unknown)}; "
                        f"choose from wandb,tensorboard")
    if not 0.5 <= noise_threshold < 1:
        raise UserError(f"noise_threshold {noise_threshold}: expected a probability in [0.5, 1)")
    p, default_out = load_predictions(run_dir=run_dir, pred=pred, gt=gt, data=data)
    out = Path(out) if out else default_out
    out.mkdir(parents=True, exist_ok=True)
    # relative image paths: against the working folder, then the data root, then the table's own folder
    thumbs = figs.Thumbnails(roots=(*((data,) if data else ()), p.source.parent))

    numbers: dict = {"source": str(p.source), "images": len(p.table), "heads": {}, "skipped": p.notes}
    sections = [summary_section := Section(id="summary", title="Summary")]
    for head in p.heads:
        result = analyse_head(p, head, thumbs)
        if result is not None:
            numbers["heads"][head.name], section = result
            sections.append(section)
    for key, analyse in (("composite", analyse_composite), ("age", analyse_age), ("breakdowns", analyse_breakdowns)):
        result = analyse(p)
        if result is not None:
            numbers[key], section = result
            sections.append(section)
    numbers["label_noise"], section, suspects = analyse_label_noise(p, thumbs, noise_threshold)
    sections.append(section)
    if run_dir and not pred:   # data.crop: what the model saw, and the photos that used the fallback
        result = analyse_crops(Path(run_dir), p.table["path"].astype(str).tolist(), thumbs)
        if result is not None:
            numbers["crops"], section = result
            sections.append(section)
    if thumbs.missing:
        p.notes.append(f"{thumbs.missing} image file(s) not found: grey placeholders shown (pass --data ROOT when "
                       f"the paths in the table are relative to a data folder)")
    fill_summary(summary_section, p, numbers)
    if p.notes:
        skipped = Section(id="skipped", title="Skipped and caveats")
        for note in p.notes:
            skipped.note(note)
        sections.append(skipped)

    title = "Error report: " + (f"{Path(run_dir).resolve().parent.name}/{Path(run_dir).resolve().name}"
                                if run_dir and not pred else p.source.name)
    subtitle = f"{len(p.table):,} images from {p.source}"
    cards = summary_cards(numbers)
    with atomic_write(out / "label_noise_suspects.csv", newline="") as f:
        suspects.to_csv(f, index=False)
    for name, text in (("report.html", render_html(title, sections, subtitle=subtitle, cards=cards)),
                       ("report.md", render_markdown(title, sections, out, subtitle=subtitle, cards=cards)),
                       ("report.json", json.dumps(jsonable(numbers), indent=1))):
        with atomic_write(out / name) as f:
            f.write(text)
    if log:
        for line in push_to_trackers(log, sections, numbers, Path(run_dir) if run_dir else out):
            print(line)
    print(f"report: {out / 'report.html'}")
    return out


# ----------------------------------------------------------------------------------------------------- inputs
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
        source = run / "oof.csv"
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
    import yaml

    path = run_dir / "config.yaml"
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
        from ...data.competition import read_competition
        frame = read_competition(root, on_conflict="warn").frame
        keys = [Path(p).parent.name + "/" + Path(p).name for p in frame["path"]]
        ages = ages.fillna(table["image_id"].map(pd.Series(frame["age"].to_numpy(), index=keys)))
    if ages.notna().any():
        table["age_years"] = table["age_years"].fillna(ages) if "age_years" in table.columns else ages.to_numpy()
    else:
        notes.append(f"--data {root}: found no ages in years for these images")


# ----------------------------------------------------------------------------------------------------- summary
def fill_summary(section: Section, p: Predictions, numbers: dict) -> None:
    rows = [[name, len(h["classes"]), h["labelled"], h["acc"], h["f1"], h["calibration"]["ece"]]
            for name, h in numbers["heads"].items()]
    if "composite" in numbers:
        c = numbers["composite"]
        rows.append(["composite (" + "×".join(c["heads"]) + ")", len(c["classes"]), c["labelled"], c["acc"], c["f1"],
                     None])
    section.text(f"{len(p.table):,} images from {p.source}. Heads: " + ", ".join(h.name for h in p.heads) + ".")
    if rows:
        section.table(["head", "classes", "labelled", "accuracy", "macro F1", "ECE"], rows)
    weakest = []
    for name, h in numbers["heads"].items():
        k = min((i for i, s in enumerate(h["support"]) if s), key=lambda i: h["f1_per_class"][i])
        weakest.append(f"{name} {h['classes'][k]} (F1 {h['f1_per_class'][k]:.3f}, {h['support'][k]} images)")
    if weakest:
        section.text("Weakest class per head: " + "; ".join(weakest) + ".")
    if "composite" in numbers and numbers["composite"]["blame"]["errors"]:
        c, b = numbers["composite"], numbers["composite"]["blame"]
        order = sorted(b["by_head"].items(), key=lambda kv: -kv[1]["among_share"])
        section.text(f"Of {b['errors']:,} wrong composite predictions, " + "; ".join(
            f"{n} is wrong in {v['among_share']:.0%} (alone in {v['only_share']:.0%})" for n, v in order) + ".")
        present = [i for i, s in enumerate(c["support"]) if s]
        weakest = sorted(present, key=lambda i: c["f1_per_class"][i])[:3]
        section.text("Weakest composite classes: " + ", ".join(
            f"{c['classes'][i]} (F1 {c['f1_per_class'][i]:.3f}, {c['support'][i]} images)" for i in weakest) + ".")
    age = numbers.get("age", {})
    t = age.get("threshold")
    if t and t["gain"] > 0:
        section.text(f"{age['head']}: shifting log p({t['class']}) by {t['best_bias']:+.1f} would move {t['metric']} "
                     f"macro F1 by {t['gain']:+.3f} on these predictions (see Age).")
    if p.notes:
        section.note(f"{len(p.notes)} part(s) skipped or with caveats: see Skipped and caveats at the end.")
    noise = numbers["label_noise"]
    section.text(f"{noise['count']:,} label-noise suspects at p ≥ {noise['threshold']:g} (see Label-noise suspects).")


def summary_cards(numbers: dict) -> list[tuple[str, str]]:
    cards = [("images", f"{numbers['images']:,}")]
    if "composite" in numbers:
        cards.append(("composite macro F1", fmt(numbers["composite"]["f1"])))
    cards += [(f"{name} macro F1", fmt(h["f1"])) for name, h in numbers["heads"].items()]
    cards.append(("label-noise suspects", f"{numbers['label_noise']['count']:,}"))
    return cards


def key_numbers(numbers: dict) -> dict[str, float]:
    out = {}
    for name, h in numbers["heads"].items():
        out |= {f"{name}/acc": h["acc"], f"{name}/f1": h["f1"], f"{name}/ece": h["calibration"]["ece"]}
    if "composite" in numbers:
        out |= {"composite/acc": numbers["composite"]["acc"], "composite/f1": numbers["composite"]["f1"]}
    if "threshold" in numbers.get("age", {}):
        t, name = numbers["age"]["threshold"], numbers["age"]["head"]
        out |= {f"{name}/best_bias": t["best_bias"], f"{name}/bias_gain": t["gain"]}
    out["label_noise/count"] = numbers["label_noise"]["count"]
    return out


def push_to_trackers(log, sections: list[Section], numbers: dict, base: Path) -> list[str]:
    """Every figure, every table and the key numbers to the run's TensorBoard and/or wandb, through its Tracker."""
    figures, tables = {}, {}
    for top in sections:
        for section in top.walk():
            for i, block in enumerate(section.blocks):
                if isinstance(block, Figure):
                    figures[f"report/{block.name}"] = block.png
                elif isinstance(block, Table):
                    tables[f"report/{section.id}/{i}"] = (block.columns, [[fmt(v) for v in row] for row in block.rows])
    scalars = {f"report/{k}": v for k, v in key_numbers(numbers).items()}
    with Tracker.for_report(base, sinks=log) as tracker:
        tracker.log_images(figures)
        tracker.log_tables(tables)
        tracker.log_summary(scalars)
        sinks, run_id = tracker.sinks, tracker.wandb_id
    lines = []
    if "tensorboard" in sinks:
        lines.append(f"report: {len(figures)} figures, {len(scalars)} numbers -> TensorBoard {base / 'tb'}")
    if "wandb" in sinks:
        lines.append(f"report: logged to wandb offline (run {run_id}) under {base / 'wandb'}; `wandb sync` uploads it")
    return lines


def jsonable(value):
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) or math.isinf(value) else float(value)
    return value
