"""The numbers and sections of the error report, one function per analysis.

    p = Predictions(table=..., heads=..., probs=..., targets=..., composite=[mask, gender, age], source=path)
    numbers, section = analyse_head(p, head, thumbs)     # confusion, per class, confused pairs, worst, calibration
    numbers, section = analyse_composite(p)              # 18x18, per-class F1, which head causes the errors
    numbers, section = analyse_age(p)                    # error by years, estimated vs true years, threshold sweep
    numbers, section = analyse_breakdowns(p)             # per metadata value
    numbers, section, suspects = analyse_label_noise(p, thumbs, 0.9)

Every analysis returns plain numbers (for report.json and the trackers) and a `Section` (for HTML and Markdown), and
appends to `p.notes` what it had to skip. Scores are sklearn's, with the conventions of `multitask.metrics.accumulator`: per-head
macro F1 over all the head's classes, composite macro F1 over the classes present (the competition metric).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

from ...heads import UNLABELLED, HeadSpec, composite_class_names, composite_decode, composite_encode
from ...metrics.table import COMPOSITE, PRED, TRUE, years_column
from . import figures as figs
from .html import Section, Tile

BIASES = np.round(np.linspace(-2.0, 2.0, 21), 3)
CALIBRATION_BINS = 10
WORST, PAIRS, PAIR_GALLERIES, PAIR_EXAMPLES, SUSPECT_TILES, SUSPECT_ROWS = 12, 6, 3, 6, 40, 100
IDENTITY = {"image_id", "path", "group", "age_years", "ImageID"}


@dataclass
class Predictions:
    """One predictions table made ready for analysis; `notes` collects what could not be used and why."""

    table: pd.DataFrame
    heads: list[HeadSpec]
    probs: dict[str, np.ndarray]
    targets: dict[str, np.ndarray]
    composite: list[HeadSpec]
    source: Path
    notes: list[str] = field(default_factory=list)


def composite_pairs(p: Predictions):
    """(rows, y_true, y_pred) composite codes on rows where every composite head is labelled; None when impossible."""
    if not p.composite:
        return None
    names = [h.name for h in p.composite]
    if f"{PRED}{COMPOSITE}" in p.table.columns:
        y_pred = p.table[f"{PRED}{COMPOSITE}"].to_numpy(np.int64)
    else:
        y_pred = composite_encode({n: p.probs[n].argmax(1) for n in names}, p.composite)
    if all(n in p.targets for n in names):
        y_true = composite_encode({n: p.targets[n] for n in names}, p.composite)
    elif f"{TRUE}{COMPOSITE}" in p.table.columns:
        y_true = p.table[f"{TRUE}{COMPOSITE}"].to_numpy(np.int64)
    else:
        return None
    rows = np.flatnonzero(y_true != UNLABELLED)
    return (rows, y_true[rows], y_pred[rows]) if len(rows) else None


# ----------------------------------------------------------------------------------------------------- per head
def tile(p: Predictions, row: int, lines: list[str], thumbs, bad: bool = True) -> Tile:
    path = p.table["path"].iloc[row] if "path" in p.table.columns else ""
    return Tile(thumbs(path), [str(p.table["image_id"].iloc[row]), *lines], bad)


def calibration(confidence: np.ndarray, correct: np.ndarray, bins: int = CALIBRATION_BINS) -> dict:
    """Equal-width bins over [0, 1]; ECE = sum over bins of (share of images) * |accuracy - mean confidence|."""
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    out, ece = [], 0.0
    for b in range(bins):
        inside = which == b
        count = int(inside.sum())
        acc = float(correct[inside].mean()) if count else float("nan")
        conf = float(confidence[inside].mean()) if count else float("nan")
        if count:
            ece += count / len(confidence) * abs(acc - conf)
        out.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "count": count, "accuracy": acc,
                    "confidence": conf})
    return {"ece": float(ece), "bins": out}


def analyse_head(p: Predictions, head: HeadSpec, thumbs):
    if head.name not in p.targets:
        p.notes.append(f"head {head.name}: no true/{head.name} column; its section is skipped")
        return None
    y_all = p.targets[head.name]
    rows = np.flatnonzero(y_all != UNLABELLED)
    if not len(rows):
        p.notes.append(f"head {head.name}: every label is -1 (unlabelled); its section is skipped")
        return None
    classes, labels = head.classes, list(range(head.num_classes))
    prob = p.probs[head.name][rows]
    y_true, y_pred = y_all[rows], prob.argmax(1)
    confidence = prob.max(1)
    counts = confusion_matrix(y_true, y_pred, labels=labels)
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    totals = counts.sum(1, keepdims=True)
    normalized = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    calib = calibration(confidence, y_true == y_pred)
    wrong = np.flatnonzero(y_true != y_pred)
    worst = wrong[np.argsort(-confidence[wrong], kind="stable")][:WORST]
    pairs = sorted(((int(counts[i, j]), i, j) for i in labels for j in labels if i != j and counts[i, j]),
                   reverse=True)[:PAIRS]
    numbers = {
        "classes": classes, "labelled": len(rows), "unlabelled": int(len(y_all) - len(rows)),
        "acc": float(np.mean(y_true == y_pred)),
        "f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "precision": precision.tolist(), "recall": recall.tolist(), "f1_per_class": f1.tolist(),
        "support": support.tolist(), "confusion": counts.tolist(), "confusion_normalized": normalized.tolist(),
        "confused_pairs": [{"true": classes[i], "pred": classes[j], "count": c, "share_of_true": c / int(totals[i, 0])}
                           for c, i, j in pairs],
        "worst": [{"image_id": str(p.table["image_id"].iloc[rows[k]]), "true": classes[y_true[k]],
                   "pred": classes[y_pred[k]], "confidence": float(confidence[k])} for k in worst],
        "calibration": calib,
    }
    slug = slugify(head.name)
    section = Section(id=f"head-{slug}", title=f"Head: {head.name}")
    section.text(f"{len(rows):,} labelled images ({numbers['unlabelled']:,} unlabelled skipped): accuracy "
                 f"{numbers['acc']:.3f}, macro F1 {numbers['f1']:.3f}, ECE {calib['ece']:.3f}.")
    sub = section.sub(f"head-{slug}-confusion", "Confusion matrix")
    sub.figure(f"{slug}_confusion", figs.confusion_figure(counts, classes, f"{head.name}: confusion"),
               caption="Rows are true classes, columns predictions.")
    sub.table(["true \\ pred", *classes], [[c, *row] for c, row in zip(classes, counts.tolist())], caption="counts",
              collapsed=len(classes) > 8, inline=True)
    sub.table(["true \\ pred", *classes], [[c, *row] for c, row in zip(classes, normalized.tolist())],
              caption="row-normalized", collapsed=len(classes) > 8, inline=True)
    sub = section.sub(f"head-{slug}-classes", "Per class")
    sub.table(["class", "precision", "recall", "F1", "support"],
              [[c, pr, rc, f, int(s)] for c, pr, rc, f, s in zip(classes, precision, recall, f1, support)])
    sub = section.sub(f"head-{slug}-pairs", "Most confused pairs")
    if pairs:
        sub.table(["true", "predicted as", "images", "share of the true class"],
                  [[d["true"], d["pred"], d["count"], d["share_of_true"]] for d in numbers["confused_pairs"]])
        for c, i, j in pairs[:PAIR_GALLERIES]:
            picked = np.flatnonzero((y_true == i) & (y_pred == j))
            picked = picked[np.argsort(-confidence[picked], kind="stable")][:PAIR_EXAMPLES]
            sub.gallery(f"{slug}_pair_{i}_{j}", [tile(p, rows[k], [f"p={confidence[k]:.2f}"], thumbs) for k in picked],
                        caption=f"{classes[i]} → {classes[j]} ({c} images), most confident first:")
    else:
        sub.text("No confusions: every labelled image is predicted right.")
    sub = section.sub(f"head-{slug}-worst", "Worst examples")
    if len(worst):
        sub.gallery(f"{slug}_worst", [tile(p, rows[k], [f"true {classes[y_true[k]]}", f"pred {classes[y_pred[k]]}",
                                                        f"conf {confidence[k]:.2f}"], thumbs) for k in worst],
                    caption="The most confident wrong predictions (label errors often hide here).")
    else:
        sub.text("No wrong predictions.")
    sub = section.sub(f"head-{slug}-calibration", "Calibration")
    sub.figure(f"{slug}_calibration", figs.calibration_figure(calib["bins"], calib["ece"], head.name),
               caption=f"Reliability over {CALIBRATION_BINS} confidence bins; ECE {calib['ece']:.3f}.")
    sub.table(["confidence bin", "images", "mean confidence", "accuracy"],
              [[f"{b['lo']:.1f}–{b['hi']:.1f}", b["count"], b["confidence"], b["accuracy"]] for b in calib["bins"]],
              collapsed=True, caption="reliability numbers")
    return numbers, section


# ----------------------------------------------------------------------------------------------------- composite
def analyse_composite(p: Predictions):
    pairs = composite_pairs(p)
    if pairs is None:
        if p.composite:
            p.notes.append("composite: no image has every one of " + ", ".join(h.name for h in p.composite) +
                           " labelled; composite section skipped")
        return None
    rows, y_true, y_pred = pairs
    classes = composite_class_names(p.composite)
    labels = list(range(len(classes)))
    counts = confusion_matrix(y_true, y_pred, labels=labels)
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    numbers = {"heads": [h.name for h in p.composite], "classes": classes, "labelled": len(rows),
               "acc": float(np.mean(y_true == y_pred)),
               "f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
               "f1_all_classes": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
               "precision": precision.tolist(), "recall": recall.tolist(), "f1_per_class": f1.tolist(),
               "support": support.tolist(), "confusion": counts.tolist(), "blame": blame(p.composite, y_true, y_pred)}
    section = Section(id="composite", title=f"Composite ({len(classes)} classes)")
    section.text(f"{len(rows):,} images with every head labelled: accuracy {numbers['acc']:.3f}, macro F1 "
                 f"{numbers['f1']:.3f} (over classes present, the competition metric; {numbers['f1_all_classes']:.3f} "
                 f"counting absent classes as 0).")
    sub = section.sub("composite-confusion", "Confusion matrix")
    block = len(classes) // p.composite[0].num_classes  # dashed lines between the groups of the first head
    sub.figure("composite_confusion", figs.confusion_figure(counts, classes, "composite", block=block),
               caption="Rows are true classes, columns predictions.")
    sub.table(["true \\ pred", *range(len(classes))], [[f"{i} {c}", *row] for i, (c, row) in
                                                        enumerate(zip(classes, counts.tolist()))],
              caption="counts (columns by class number)", collapsed=True)
    sub = section.sub("composite-classes", "Per class")
    sub.figure("composite_f1", figs.f1_bars(classes, f1.tolist(), support.tolist(), "composite: F1 per class"))
    sub.table(["#", "class", "precision", "recall", "F1", "support"],
              [[i, c, pr, rc, f, int(s)] for i, (c, pr, rc, f, s) in
               enumerate(zip(classes, precision, recall, f1, support))], collapsed=True, caption="per-class numbers")
    sub = section.sub("composite-blame", "Which head causes the errors")
    b = numbers["blame"]
    if b["errors"]:
        heads = [h.name for h in p.composite]
        sub.figure("composite_blame", figs.blame_figure(heads, [b["by_head"][h]["only_share"] for h in heads],
                                                        [b["by_head"][h]["among_share"] for h in heads], b["errors"]))
        sub.table(["head", "only this head wrong", "share of errors", "among the wrong heads", "share of errors"],
                  [[h, b["by_head"][h]["only"], b["by_head"][h]["only_share"], b["by_head"][h]["among"],
                    b["by_head"][h]["among_share"]] for h in heads])
        sub.text(f"{b['several']:,} of {b['errors']:,} wrong composite predictions ({b['several_share']:.0%}) have "
                 f"more than one head wrong.")
    else:
        sub.text("No composite errors.")
    return numbers, section


def blame(heads: list[HeadSpec], y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """For each wrong composite prediction, which component heads were wrong."""
    wrong = y_true != y_pred
    true_parts = composite_decode(y_true[wrong], heads)
    pred_parts = composite_decode(y_pred[wrong], heads)
    off = np.stack([true_parts[h.name] != pred_parts[h.name] for h in heads], axis=1)
    errors = int(wrong.sum())
    share = (lambda n: n / errors if errors else 0.0)
    only = off & (off.sum(1, keepdims=True) == 1)
    by_head = {h.name: {"only": int(only[:, k].sum()), "only_share": share(int(only[:, k].sum())),
                        "among": int(off[:, k].sum()), "among_share": share(int(off[:, k].sum()))}
               for k, h in enumerate(heads)}
    several = int((off.sum(1) > 1).sum())
    return {"errors": errors, "by_head": by_head, "several": several, "several_share": share(several)}


# ----------------------------------------------------------------------------------------------------- age
def binned_head(p: Predictions) -> HeadSpec | None:
    """The head whose classes are bins of a number (age in years): the one the age analysis is about."""
    return next((h for h in p.heads if h.eval_bins or h.bins), None)


def analyse_age(p: Predictions):
    head = binned_head(p)
    if head is None or head.name not in p.targets or not (p.targets[head.name] != UNLABELLED).any():
        p.notes.append("age: no labelled head with bins (a bins/<head> column); age error by years and the "
                       "threshold sweep are skipped")
        return None
    section = Section(id="age", title=f"Age ({head.name})")
    numbers = {"head": head.name}
    y = p.targets[head.name]
    pred = p.probs[head.name].argmax(1)
    if "age_years" in p.table.columns:
        years = pd.to_numeric(p.table["age_years"], errors="coerce").to_numpy(float)
        keep = (y != UNLABELLED) & np.isfinite(years)
        if keep.any():
            numbers["error_by_years"] = error_by_years(years[keep], y[keep] != pred[keep],
                                                       [head.classes[c] for c in y[keep]])
            rows_ = numbers["error_by_years"]
            sub = section.sub("age-years", "Error rate by true age")
            sub.figure("age_error_by_years", figs.age_error_figure(
                [r["years"] for r in rows_], [r["error_rate"] for r in rows_], [r["images"] for r in rows_],
                [r["class"] for r in rows_], f"{head.name} errors by years"),
                caption=f"Share of images whose {head.name} class is wrong, by true age in years; errors pile up "
                        f"next to the class boundaries.")
            sub.table(["years", "true class", "images", "wrong", "error rate"],
                      [[r["years"], r["class"], r["images"], r["wrong"], r["error_rate"]] for r in rows_],
                      collapsed=True,
                      caption="numbers")
        estimate = years_estimate(p, head, years)
        if estimate is not None:
            numbers["years_estimate"] = estimate
            sub = section.sub("age-estimate", "Estimated vs true age")
            sub.figure("age_years_scatter", figs.years_scatter_figure(
                estimate["true"], estimate["estimate"], [float(e) for e in head.eval_bins or head.bins or []],
                f"{head.name}: expected age vs true age"),
                caption=f"The years head's expected age (Σ year × p) against the true age; dotted lines: the class "
                        f"edges. MAE {estimate['mae_years']:.2f} years, mean error {estimate['bias']:+.2f} years "
                        f"over {estimate['images']} images.")
            del estimate["true"], estimate["estimate"]   # report.json keeps the summary, not every row
    if "error_by_years" not in numbers:
        p.notes.append("age: no age_years column with values (pass --data ROOT or a --gt with age_years); "
                       "error by years skipped")
    numbers["threshold"] = threshold_sweep(p, head)
    t = numbers["threshold"]
    sub = section.sub("age-threshold", f"Shifting the {t['class']} decision")
    sub.figure("age_threshold", figs.threshold_figure(t["biases"], t["composite_f1"], t["head_f1"], t["best_bias"],
                                                      head.name, t["class"]))
    sub.text(f"Adding b to log p({head.name} = {t['class']}) before the argmax: the best b is {t['best_bias']:+.1f}, "
             f"{t['metric']} macro F1 {t['f1_at_zero']:.3f} → {t['best_f1']:.3f} (gain {t['gain']:+.3f}).")
    sub.note("b is chosen on the same predictions it is scored on, so the gain is optimistic: confirm it on another "
             "fold or the leaderboard before using it.")
    return numbers, section


def years_estimate(p: Predictions, head: HeadSpec, years: np.ndarray) -> dict | None:
    """MAE and mean error (estimate - truth) in years of a years head's pred/<head>/years where the truth is known;
    None without that column. `true` and `estimate` (lists) are for the figure."""
    column = years_column(head.name)
    if column not in p.table.columns:
        return None
    estimate = pd.to_numeric(p.table[column], errors="coerce").to_numpy(float)
    keep = np.isfinite(years) & np.isfinite(estimate)
    if not keep.any():
        return None
    error = estimate[keep] - years[keep]
    return {"mae_years": float(np.abs(error).mean()), "bias": float(error.mean()), "images": int(keep.sum()),
            "true": years[keep].tolist(), "estimate": estimate[keep].tolist()}


def error_by_years(years: np.ndarray, wrong: np.ndarray, classes: list[str]) -> list[dict]:
    """One bucket per year, or per two years when the ages span more than 40 years; `class` is its commonest label."""
    width = 1 if years.max() - years.min() <= 40 else 2
    starts = (np.floor(years) // width * width).astype(int)
    out = []
    for start in np.unique(starts):
        inside = starts == start
        label = str(start) if width == 1 else f"{start}-{start + width - 1}"
        names, counts = np.unique(np.asarray(classes)[inside], return_counts=True)
        out.append({"years": label, "class": str(names[counts.argmax()]), "images": int(inside.sum()),
                    "wrong": int(wrong[inside].sum()),
                    "error_rate": float(wrong[inside].mean())})
    return out


def threshold_sweep(p: Predictions, head: HeadSpec) -> dict:
    """Shift the log-probability of the head's top class (the oldest bin) by each bias; F1 after each shift."""
    k = head.num_classes - 1
    log_p = np.log(np.clip(p.probs[head.name], 1e-12, None))
    y = p.targets[head.name]
    labelled = y != UNLABELLED
    pairs = composite_pairs(p) if any(h.name == head.name for h in p.composite) else None
    if pairs is not None:
        rows, y_true, y_pred = pairs
        parts = composite_decode(y_pred, p.composite)
    head_f1, comp_f1 = [], []
    for b in BIASES:
        shifted = log_p.copy()
        shifted[:, k] += b
        head_pred = shifted.argmax(1)
        head_f1.append(float(f1_score(y[labelled], head_pred[labelled], labels=list(range(head.num_classes)),
                                      average="macro", zero_division=0)))
        if pairs is not None:
            codes = composite_encode({**parts, head.name: head_pred[rows]}, p.composite)
            comp_f1.append(float(f1_score(y_true, codes, average="macro", zero_division=0)))
    scores = comp_f1 if pairs is not None else head_f1
    zero = int(np.argmin(np.abs(BIASES)))
    best = max(range(len(BIASES)), key=lambda i: (round(scores[i], 12), -abs(BIASES[i])))
    return {"class": head.classes[k], "biases": BIASES.tolist(), "head_f1": head_f1,
            "composite_f1": comp_f1 if pairs is not None else None,
            "metric": "composite" if pairs is not None else head.name,
            "best_bias": float(BIASES[best]), "best_f1": scores[best], "f1_at_zero": scores[zero],
            "gain": scores[best] - scores[zero]}


# ----------------------------------------------------------------------------------------------------- breakdowns
def analyse_breakdowns(p: Predictions):
    table = p.table
    # metadata: the columns that are neither identity nor prob/pred/true/..., with few enough values to group by
    columns = [c for c in table.columns if "/" not in c and c not in IDENTITY and 1 <= table[c].nunique() <= 30]
    if not columns:
        p.notes.append("breakdowns: no metadata columns (e.g. gender, race, fold) in the table")
        return None
    comp = composite_pairs(p)
    heads = [h for h in p.heads if h.name in p.targets]
    section = Section(id="breakdowns", title="Breakdowns by metadata")
    section.text("Per value of each metadata column: images, composite accuracy and macro F1, each head's accuracy. "
                 "A group far below the rest points at a bias the validation mean hides.")
    numbers, panels = {}, []
    metric = "composite_f1" if comp is not None else (f"{heads[0].name}_acc" if heads else None)
    for column in columns:
        values = table[column].astype(str).where(table[column].notna(), "(blank)").to_numpy()
        order = sorted(set(values), key=lambda v: (not _numeric(v), float(v) if _numeric(v) else 0, v))
        rows_ = []
        for value in order:
            inside = values == value
            row = {"value": value, "images": int(inside.sum())}
            if comp is not None:
                keep = inside[comp[0]]
                t, q = comp[1][keep], comp[2][keep]
                row["composite_acc"] = float(np.mean(t == q)) if len(t) else None
                row["composite_f1"] = float(f1_score(t, q, average="macro", zero_division=0)) if len(t) else None
            for h in heads:
                mask = inside & (p.targets[h.name] != UNLABELLED)
                row[f"{h.name}_acc"] = (float(np.mean(p.targets[h.name][mask] == p.probs[h.name][mask].argmax(1)))
                                        if mask.any() else None)
            rows_.append(row)
        numbers[column] = rows_
        if metric and len(rows_) > 1:
            panels.append((column, [r["value"] for r in rows_],
                           [np.nan if r[metric] is None else r[metric] for r in rows_], [r["images"] for r in rows_]))
    if panels:
        section.figure("breakdowns", figs.breakdown_figure(panels, label(metric)))
    for column, rows_ in numbers.items():
        sub = section.sub(f"breakdown-{slugify(column)}", f"By {column}")
        keys = list(rows_[0])
        sub.table([label(k) for k in keys], [[r[k] for k in keys] for r in rows_])
    return numbers, section


def label(key: str) -> str:
    for suffix, words in (("_acc", " accuracy"), ("_f1", " F1")):
        if key.endswith(suffix):
            return key[: -len(suffix)].replace("_", " ") + words
    return key.replace("_", " ")


def _numeric(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


# ----------------------------------------------------------------------------------------------------- label noise
def analyse_label_noise(p: Predictions, thumbs, threshold: float):
    """Images where the model gives another class than the label >= threshold: candidates for a label fix."""
    section = Section(id="label-noise", title="Label-noise suspects")
    composite_names = composite_class_names(p.composite) if p.composite else None
    records = []
    for head in p.heads:
        if head.name not in p.targets or (composite_names and head.classes == composite_names):
            continue  # a derived 18-class head is covered by its components
        y = p.targets[head.name]
        rows = np.flatnonzero(y != UNLABELLED)
        other = p.probs[head.name][rows].copy()
        other[np.arange(len(rows)), y[rows]] = -1.0
        for k in np.flatnonzero(other.max(1) >= threshold):
            records.append({"row": int(rows[k]), "head": head.name, "label": head.classes[y[rows[k]]],
                            "suggested": head.classes[int(other[k].argmax())], "confidence": float(other[k].max())})
    records.sort(key=lambda r: -r["confidence"])
    for r in records:
        r["image_id"] = str(p.table["image_id"].iloc[r["row"]])
        r["id"] = _cell(p.table, "group", r["row"]) or r["image_id"]  # label fixes name the person
        r["image"] = _cell(p.table, "stem", r["row"])
    suspects = pd.DataFrame([{"id": r["id"], "field": r["head"], "value": r["suggested"], "image": r["image"]}
                             for r in records], columns=["id", "field", "value", "image"]).drop_duplicates()
    section.text(f"{len(records):,} labels where the out-of-fold probability of another class is ≥ {threshold:g}, "
                 f"most confident first. All are in label_noise_suspects.csv (id,field,value,image: the label-fix "
                 f"format) for review; nothing is changed automatically.")
    per_person = person_heads(p)
    if any(r["head"] in per_person and r["image"] for r in records):
        section.note(f"{', '.join(per_person)} belong to the person (one label for all of a person's photos here): "
                     f"the CSV names the photo that raised the doubt; clear its image column to fix every photo of "
                     f"that person.")
    binned = binned_head(p)
    if binned is not None and any(r["head"] == binned.name for r in records):
        section.note(f"{binned.name} rows hold the suggested class; a label fix for {binned.name} takes the number "
                     f"its classes are binned from (years), so put the person's value there after checking the "
                     f"photos.")
    if records:
        section.gallery("label_noise", [tile(p, r["row"], [f"{r['head']}: {r['label']} → {r['suggested']}",
                                                          f"p={r['confidence']:.2f}"], thumbs)
                                        for r in records[:SUSPECT_TILES]])
        section.table(["image", "person", "head", "label", "suggested", "probability"],
                      [[r["image_id"], r["id"], r["head"], r["label"], r["suggested"], r["confidence"]]
                       for r in records[:SUSPECT_ROWS]], caption=f"first {min(len(records), SUSPECT_ROWS)}")
    numbers = {"threshold": threshold, "count": len(records), "csv": "label_noise_suspects.csv",
               "suspects": [{k: r[k] for k in ("image_id", "id", "head", "label", "suggested", "confidence")}
                            for r in records]}
    return numbers, section, suspects


def person_heads(p: Predictions) -> list[str]:
    """Heads whose label never varies between the photos of one person (`group`), where some person has two."""
    if "group" not in p.table.columns:
        return []
    out = []
    for head in p.heads:
        if head.name not in p.targets:
            continue
        labels = pd.Series(p.targets[head.name], index=p.table.index)
        known = labels != UNLABELLED
        per_group = labels[known].groupby(p.table["group"][known])
        if len(per_group) and per_group.size().max() > 1 and per_group.nunique().max() == 1:
            out.append(head.name)
    return out


def _cell(table: pd.DataFrame, column: str, row: int) -> str:
    if column not in table.columns or pd.isna(table[column].iloc[row]):
        return ""
    return str(table[column].iloc[row])


def slugify(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "head"

