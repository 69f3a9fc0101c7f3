"""Per-head error analysis: why does a model miss, and would the leaderboard agree with validation?

    multitask report runs/quickstart/1                                  # the run's out-of-fold predictions (oof.csv)
    multitask report --pred out/predictions.csv --gt data/synthetic/eval/gt.csv
    multitask report runs/quickstart/1 --log wandb,tensorboard           # also push figures and numbers to trackers
    python scripts/error_report.py runs/quickstart/1 --out /tmp/report

Writes report.html (self-contained), report.md (+ PNG files), report.json (every number) and label_noise_suspects.csv
(label-fix format id,field,value,image) into the output folder. Input is the predictions table of
`multitask.predictions`; anything that cannot be computed (a head without labels, no ages in years, no metadata) is
skipped and named in the page, so a report always comes out.
"""
from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from . import report_figures as figs
from .errors import UserError
from .heads import UNLABELLED, HeadSpec, class_index, composite_class_names, composite_decode, composite_encode
from .parsing import signed_number
from .predictions import COMPOSITE, PRED, TRUE, read_table
from .report_analysis import (Predictions, analyse_age, analyse_breakdowns, analyse_composite, analyse_head,
                              analyse_label_noise)
from .report_html import Section, fmt, render_html, render_markdown

NOISE_THRESHOLD = 0.9
DEFAULT_COMPOSITE = ("mask", "gender", "age")
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
    suspects.to_csv(out / "label_noise_suspects.csv", index=False)
    (out / "report.html").write_text(render_html(title, sections, subtitle=subtitle, cards=cards), encoding="utf-8")
    (out / "report.md").write_text(render_markdown(title, sections, out, subtitle=subtitle, cards=cards),
                                   encoding="utf-8")
    (out / "report.json").write_text(json.dumps(jsonable(numbers), indent=1), encoding="utf-8")
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
    try:
        table, heads, probs, targets = read_table(source)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as err:
        raise UserError(f"{source}: not a readable predictions table ({str(err).splitlines()[0]})") from None
    if not heads or "image_id" not in table.columns:
        raise UserError(f"{source}: expected columns image_id and prob/<head>/<class> (a table written by "
                        f"`multitask train` or `multitask predict`), found {', '.join(table.columns[:8])}")
    if table.empty:
        raise UserError(f"{source}: no rows")
    check_classes(source, table, heads, configured_classes(Path(run_dir)) if run_dir and not pred else {})
    notes: list[str] = []
    if gt:
        attach_gt(table, heads, probs, targets, Path(gt), notes)
    elif not targets and "true/composite" not in table.columns:
        raise UserError(f"{source}: no true/<head> columns to score against; pass --gt gt.csv (ImageID plus ans or "
                        f"per-head columns)")
    if data:
        attach_ages(table, Path(data), notes)
    composite = find_composite(heads, table, probs, targets)
    size = math.prod(h.num_classes for h in composite)
    for column in (f"{PRED}{COMPOSITE}", f"{TRUE}{COMPOSITE}"):
        top = pd.to_numeric(table[column], errors="coerce").max() if composite and column in table.columns else None
        if top is not None and top >= size:
            raise UserError(f"{source}: column {column} holds class {top:.0f}, but the heads "
                            f"{', '.join(h.name for h in composite)} give only {size} composite classes; a head's "
                            f"prob/<head>/<class> columns are incomplete")
    if not composite:
        notes.append("no composite label: need heads named mask, gender, age or a pred/composite column that "
                     "matches some of the heads")
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


def check_classes(source: Path, table: pd.DataFrame, heads: list[HeadSpec], configured: dict[str, list[str]]) -> None:
    """Every class of every head has its prob/<head>/<class> column. Without one the head would be scored as a
    smaller head: an age head missing >=60 reads as a 2-class head with a macro F1 it never earned."""
    for head in heads:
        expected = configured.get(head.name)
        if expected is not None and list(head.classes) != expected:
            missing = [c for c in expected if c not in head.classes]
            what = (f"no column prob/{head.name}/{missing[0]}" if missing else
                    f"columns prob/{head.name}/{', '.join(head.classes)}")
            raise UserError(f"{source}: {what}, but the run's config gives head {head.name} the classes "
                            f"{', '.join(expected)}; every class needs its probability column")
        for column in (f"{PRED}{head.name}", f"{TRUE}{head.name}"):
            top = pd.to_numeric(table[column], errors="coerce").max() if column in table.columns else None
            if top is not None and top >= head.num_classes:
                raise UserError(f"{source}: column {column} holds class {top:.0f}, but the table has "
                                f"only {head.num_classes} prob/{head.name}/ columns ({', '.join(head.classes)}); "
                                f"every class needs its probability column (was one dropped?)")


def attach_gt(table: pd.DataFrame, heads: list[HeadSpec], probs, targets: dict, path: Path, notes: list) -> None:
    """Fill true/<head> (and age_years) from a ground-truth CSV joined on image_id == ImageID."""
    if not path.is_file():
        raise UserError(f"--gt {path}: no such file; expected a CSV with ImageID plus ans or per-head columns")
    gt = pd.read_csv(path, dtype=str, keep_default_na=False)
    gt.columns = [c.strip() for c in gt.columns]
    names = ", ".join(h.name for h in heads)
    if "ImageID" not in gt.columns:
        raise UserError(f"--gt {path}: no ImageID column; expected ImageID plus ans or per-head columns ({names})")
    gt = gt.assign(ImageID=gt["ImageID"].str.strip()).drop_duplicates("ImageID").set_index("ImageID")
    ids = table["image_id"].astype(str).str.strip()
    found = ids.isin(gt.index)
    if not found.any():
        raise UserError(f"--gt {path}: no image_id of the predictions is an ImageID there (first: {ids.iloc[0]!r} vs "
                        f"{gt.index[0]!r}); were they made for the same evaluation set?")
    if not found.all():
        notes.append(f"{int((~found).sum())} of {len(ids)} predictions have no row in {path.name}: unlabelled")
    rows = gt.reindex(ids.to_numpy())
    filled = []
    for head in heads:
        if head.name in gt.columns:
            try:
                targets[head.name] = np.array([class_index(head, v) for v in rows[head.name]], dtype=np.int64)
            except ValueError as err:
                raise UserError(f"--gt {path}: column {head.name}: {err}") from None
            filled.append(head.name)
    composite = find_composite(heads, table, probs, {})
    if "ans" in gt.columns and composite and not all(h.name in filled for h in composite):
        cells = rows["ans"].fillna("").str.strip()   # ids missing from the gt reindex to NaN: unlabelled
        bad = cells[(cells != "") & cells.map(lambda text: signed_number(text) is None)]
        if len(bad):
            raise UserError(f"--gt {path}: ans {bad.iloc[0]!r} for {bad.index[0]} is not a class index")
        ans = np.array([signed_number(text) if text else UNLABELLED for text in cells], dtype=np.int64)
        size = len(composite_class_names(composite))
        if ans.max() >= size:
            raise UserError(f"--gt {path}: ans {ans.max()} out of range 0..{size - 1} for heads "
                            f"{', '.join(h.name for h in composite)}")
        for name, values in composite_decode(ans, composite).items():
            if name not in filled:
                targets[name] = values
                filled.append(name)
    if not filled:
        raise UserError(f"--gt {path}: no column named after a head ({names}) and no usable ans column")
    for name in filled:
        table[f"{TRUE}{name}"] = targets[name]
    table.drop(columns=[f"{TRUE}{COMPOSITE}"], errors="ignore", inplace=True)
    if "age_years" in gt.columns:
        table["age_years"] = pd.to_numeric(rows["age_years"], errors="coerce").to_numpy()


def attach_ages(table: pd.DataFrame, root: Path, notes: list) -> None:
    """age_years from a data root when the table lacks it: eval/gt.csv by ImageID, train folders by image."""
    if not root.is_dir():
        raise UserError(f"--data {root}: no such folder; expected the data root (e.g. data/synthetic)")
    if "age_years" in table.columns and table["age_years"].notna().all():
        return
    ages = pd.Series(np.nan, index=table.index)
    if (root / "eval" / "gt.csv").is_file():
        gt = pd.read_csv(root / "eval" / "gt.csv", dtype={"ImageID": str})
        if "age_years" in gt.columns:
            ages = ages.fillna(table["image_id"].map(gt.set_index("ImageID")["age_years"]))
    if (root / "train" / "images").is_dir() and ages.isna().any():
        from .data.competition import read_competition
        frame = read_competition(root, on_conflict="warn").frame
        keys = [Path(p).parent.name + "/" + Path(p).name for p in frame["path"]]
        ages = ages.fillna(table["image_id"].map(pd.Series(frame["age"].to_numpy(), index=keys)))
    if ages.notna().any():
        table["age_years"] = table["age_years"].fillna(ages) if "age_years" in table.columns else ages.to_numpy()
    else:
        notes.append(f"--data {root}: found no ages in years for these images")


def find_composite(heads, table, probs, targets) -> list[HeadSpec]:
    """mask, gender, age by name; otherwise the ordered heads whose encoding reproduces the composite column."""
    by_name = {h.name: h for h in heads}
    if all(n in by_name for n in DEFAULT_COMPOSITE):
        return [by_name[n] for n in DEFAULT_COMPOSITE]
    candidates = []
    if f"{PRED}{COMPOSITE}" in table.columns:
        candidates.append((table[f"{PRED}{COMPOSITE}"], {n: p.argmax(1) for n, p in probs.items()}))
    if f"{TRUE}{COMPOSITE}" in table.columns:
        candidates.append((table[f"{TRUE}{COMPOSITE}"], targets))
    best, best_score = [], 0.5
    for column, parts in candidates:
        codes = column.to_numpy(np.int64)
        for r in range(2, min(len(heads), 4) + 1):
            for combo in itertools.permutations([h for h in heads if h.name in parts], r):
                if math.prod(h.num_classes for h in combo) <= codes.max():
                    continue
                encoded = composite_encode({h.name: parts[h.name] for h in combo}, combo)
                valid = (codes >= 0) & (encoded >= 0)
                score = float(np.mean(encoded[valid] == codes[valid])) if valid.any() else 0.0
                if score > best_score:
                    best, best_score = list(combo), score
    return best


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
    t = numbers.get("age", {}).get("threshold")
    if t and t["gain"] > 0:
        section.text(f"Age: shifting log p({t['class']}) by {t['best_bias']:+.1f} would move {t['metric']} macro F1 "
                     f"by {t['gain']:+.3f} on these predictions (see Age).")
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
        t = numbers["age"]["threshold"]
        out |= {"age/best_bias": t["best_bias"], "age/bias_gain": t["gain"]}
    out["label_noise/count"] = numbers["label_noise"]["count"]
    return out


def push_to_trackers(log, sections: list[Section], numbers: dict, base: Path) -> list[str]:
    """The run's own wandb id (from its offline run folder) and project (from its config.yaml) when they exist."""
    from .report_html import publish

    # the training's offline run folders are named ...-run-<date>_<time>-<id>
    runs = sorted((base / "wandb").glob("*run-*-*"), key=lambda d: d.stat().st_mtime)
    run_id = runs[-1].name.rsplit("-", 1)[-1] if runs else None
    project = "multitask"
    if (base / "config.yaml").is_file():
        import yaml
        cfg = yaml.safe_load((base / "config.yaml").read_text()) or {}
        project = ((cfg.get("tracking") or {}).get("wandb") or {}).get("project") or project
    return publish(log, sections=sections, scalars=key_numbers(numbers), base=base, run_id=run_id, project=project)



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
