"""Per-head error analysis: why does a model miss, and would the leaderboard agree with validation?

    multitask report runs/quickstart/1                                  # the run's out-of-fold predictions (oof.csv)
    multitask report --pred out/predictions.csv --gt data/synthetic/eval/gt.csv
    multitask report runs/quickstart/1 --log wandb,tensorboard           # also push figures and numbers to trackers
    python scripts/error_report.py runs/quickstart/1 --out /tmp/report

Writes report.html (self-contained), report.md (+ PNG files), report.json (every number) and
label_fixes_suggested.csv (cleanlab's label issues in the data.label_fixes format id,field,value,image) into the
output folder. Input is the predictions table of
`multitask.metrics.table`; anything that cannot be computed (a head without labels, no ages in years, no metadata) is
skipped and named in the page, so a report always comes out.
"""
from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import numpy as np

from ...tracking.tracker import Tracker
from ...utils.errors import UserError
from ...utils.io import write_csv, write_text
from ...utils.text import fmt
from . import figures as figs
from .age import analyse_age
from .breakdowns import analyse_breakdowns
from .cam import PHOTOS as CAM_PHOTOS
from .cam import analyse_cams
from .composite import analyse_composite
from .crops import analyse_crops
from .heads import analyse_head
from .html import Figure, Section, Table, render_html, render_markdown
from .inputs import load_predictions
from .label_issues import CSV as SUGGESTED_FIXES
from .label_issues import analyse_label_issues
from .predictions import Predictions
from .summary import fill_summary, key_numbers, summary_cards
from .teacher import analyse_teacher

TRACKERS = ("wandb", "tensorboard")


# ----------------------------------------------------------------------------------------------------- entry point
def build_report(*, run_dir=None, pred=None, gt=None, out=None, data=None, log=(), cam_photos: int | None = None,
                 cache_dir=None) -> Path:
    """Analyse one predictions table and write the report folder; returns the folder. `cam_photos`: class
    activation maps of that many photos per head (a run dir's report; 0: none; None: CAM_PHOTOS); `cache_dir`: the
    face-box store."""
    cam_photos = CAM_PHOTOS if cam_photos is None else cam_photos
    if cam_photos < 0:
        raise UserError(f"--cam-photos: expected 0 (no maps) or more photos per head, got {cam_photos}")
    unknown = [t for t in log if t not in TRACKERS]
    if unknown:
        raise UserError(f"--log {','.join(log)}: unknown tracker(s) {', '.join(unknown)}; "
                        f"choose from wandb,tensorboard")
    p, default_out = load_predictions(run_dir=run_dir, pred=pred, gt=gt, data=data)
    out = Path(out) if out else default_out
    out.mkdir(parents=True, exist_ok=True)
    # relative image paths: against the working folder, then the data root, then the table's own folder
    thumbs = figs.Thumbnails(roots=(*((data,) if data else ()), p.source.parent))
    crops_of = Path(run_dir) if run_dir and not pred else None   # data.crop: what the model saw
    cams = functools.partial(analyse_cams, out=out, thumbs=thumbs, photos=cam_photos, cache_dir=cache_dir)
    numbers, sections = analyse(p, thumbs, crops_of, cams=cams)
    title = "Error report: " + (f"{crops_of.resolve().parent.name}/{crops_of.resolve().name}" if crops_of
                                else p.source.name)
    write_report(out, title, f"{len(p.table):,} images from {p.source}", sections, numbers)
    if log:
        for line in push_to_trackers(log, sections, numbers, Path(run_dir) if run_dir else out):
            print(line)
    print(f"report: {out / 'report.html'}")
    return out


def analyse(p: Predictions, thumbs, run_dir: Path | None, *, cams=None) -> tuple[dict, list[Section]]:
    """(report.json's numbers, the page's sections): summary, each head, composite, age, breakdowns, label issues,
    crops, where each head looks (`cams(p, run_dir)`: analyse_cams with its options) and the student against its
    teacher (a run dir's), and what was skipped. The suggested label fixes travel as
    numbers["label_issues"]["table"]."""
    numbers: dict = {"source": str(p.source), "images": len(p.table), "heads": {}, "skipped": p.notes}
    sections = [summary := Section(id="summary", title="Summary")]
    analyses = [(f"heads/{h.name}", lambda h=h: analyse_head(p, h, thumbs)) for h in p.heads]
    analyses += [("composite", lambda: analyse_composite(p)), ("age", lambda: analyse_age(p)),
                 ("breakdowns", lambda: analyse_breakdowns(p)),
                 ("label_issues", lambda: analyse_label_issues(p, thumbs))]
    if run_dir is not None:
        analyses.append(("crops", lambda: analyse_crops(run_dir, p.table["path"].astype(str).tolist(), thumbs)))
        if cams is not None:
            analyses.append(("cam", lambda: cams(p, run_dir)))
        analyses.append(("teacher", lambda: analyse_teacher(p, run_dir)))
    for key, run in analyses:
        result = run()
        if result is not None:
            value, section = result
            if key.startswith("heads/"):
                numbers["heads"][key[len("heads/"):]] = value
            else:
                numbers[key] = value
            sections.append(section)
    if thumbs.missing:
        p.notes.append(f"{thumbs.missing} image file(s) not found: grey placeholders shown (pass --data ROOT when "
                       f"the paths in the table are relative to a data folder)")
    fill_summary(summary, p, numbers)
    if p.notes:
        skipped = Section(id="skipped", title="Skipped and caveats")
        for note in p.notes:
            skipped.note(note)
        sections.append(skipped)
    return numbers, sections


def write_report(out: Path, title: str, subtitle: str, sections: list[Section], numbers: dict) -> None:
    """report.html, report.md (+ its PNGs), report.json and the suggested label fixes, each written atomically."""
    cards = summary_cards(numbers)
    write_csv(numbers["label_issues"].pop("table"), out / SUGGESTED_FIXES)
    write_text(out / "report.html", render_html(title, sections, subtitle=subtitle, cards=cards))
    write_text(out / "report.md", render_markdown(title, sections, out, subtitle=subtitle, cards=cards))
    write_text(out / "report.json", json.dumps(jsonable(numbers), indent=1))


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
