"""The report's section per head: confusion, per-class scores, the most confused pairs, the worst examples and the
calibration of its probabilities, all on the decided labels."""
from __future__ import annotations

import numpy as np

from ...heads import UNLABELLED, HeadSpec
from ...metrics.figures import confusion_figure
from ...metrics.stats import head_scores
from . import figures as figs
from .html import Section
from .predictions import Predictions, slugify, tile

CALIBRATION_BINS = 10
WORST, PAIRS, PAIR_GALLERIES, PAIR_EXAMPLES = 12, 6, 3, 6


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
    """(numbers, section) of one head on its labelled rows; None (with a note) when it has none."""
    if head.name not in p.targets:
        p.notes.append(f"head {head.name}: no true/{head.name} column; its section is skipped")
        return None
    rows = np.flatnonzero(p.targets[head.name] != UNLABELLED)
    if not len(rows):
        p.notes.append(f"head {head.name}: every label is -1 (unlabelled); its section is skipped")
        return None
    numbers, view = head_numbers(p, head, rows)
    section = Section(id=f"head-{slugify(head.name)}", title=f"Head: {head.name}")
    moved = p.moved(head.name)
    decided = (f"; {moved:,} of them moved off the argmax by tuned decisions" if moved else "")
    section.text(f"{len(rows):,} labelled images ({numbers['unlabelled']:,} unlabelled skipped): accuracy "
                 f"{numbers['acc']:.3f}, macro F1 {numbers['f1']:.3f}, ECE {numbers['calibration']['ece']:.3f}. "
                 f"Scored on the decided labels (pred/{head.name}){decided}.")
    confusion_section(section, head, numbers)
    pairs_section(section, p, head, numbers, view, thumbs)
    calibration_section(section, head, numbers["calibration"])
    return numbers, section


def head_numbers(p: Predictions, head: HeadSpec, rows: np.ndarray) -> tuple[dict, dict]:
    """(report.json's numbers of the head, the per-row arrays its sections draw from)."""
    classes = head.classes
    prob = p.probs[head.name][rows]
    y_true, y_pred = p.targets[head.name][rows], p.decided(head.name)[rows]
    confidence = prob.max(1)
    s = head_scores(y_true, y_pred, head.num_classes)
    counts = s["confusion"]
    totals = counts.sum(1, keepdims=True)
    normalized = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    wrong = np.flatnonzero(y_true != y_pred)
    worst = wrong[np.argsort(-confidence[wrong], kind="stable")][:WORST]
    pairs = sorted(((int(counts[i, j]), i, j) for i in range(len(classes)) for j in range(len(classes))
                    if i != j and counts[i, j]), reverse=True)[:PAIRS]
    numbers = {
        "classes": classes, "labelled": len(rows), "unlabelled": int(len(p.table) - len(rows)),
        "acc": s["acc"], "f1": s["f1"], "precision": s["precision"], "recall": s["recall"],
        "f1_per_class": s["f1_per_class"], "support": s["support"], "confusion": counts.tolist(),
        "confusion_normalized": normalized.tolist(), "decided_off_argmax": p.moved(head.name),
        "confused_pairs": [{"true": classes[i], "pred": classes[j], "count": c, "share_of_true": c / int(totals[i, 0])}
                           for c, i, j in pairs],
        "worst": [{"image_id": str(p.table["image_id"].iloc[rows[k]]), "true": classes[y_true[k]],
                   "pred": classes[y_pred[k]], "confidence": float(confidence[k])} for k in worst],
        "calibration": calibration(confidence, y_true == prob.argmax(1)),
    }
    return numbers, {"rows": rows, "y_true": y_true, "y_pred": y_pred, "confidence": confidence, "pairs": pairs,
                     "worst": worst}


def confusion_section(section: Section, head: HeadSpec, numbers: dict) -> None:
    slug, classes = slugify(head.name), head.classes
    counts = np.asarray(numbers["confusion"])
    sub = section.sub(f"head-{slug}-confusion", "Confusion matrix")
    sub.figure(f"{slug}_confusion", confusion_figure(counts, classes, f"{head.name}: confusion"),
               caption="Rows are true classes, columns the decided predictions.")
    sub.table(["true \\ pred", *classes], [[c, *row] for c, row in zip(classes, counts.tolist())], caption="counts",
              collapsed=len(classes) > 8, inline=True)
    sub.table(["true \\ pred", *classes], [[c, *row] for c, row in zip(classes, numbers["confusion_normalized"])],
              caption="row-normalized", collapsed=len(classes) > 8, inline=True)
    sub = section.sub(f"head-{slug}-classes", "Per class")
    sub.table(["class", "precision", "recall", "F1", "support"],
              [[c, pr, rc, f, int(n)] for c, pr, rc, f, n in zip(classes, numbers["precision"], numbers["recall"],
                                                                  numbers["f1_per_class"], numbers["support"])])


def pairs_section(section: Section, p: Predictions, head: HeadSpec, numbers: dict, view: dict, thumbs) -> None:
    """The most confused pairs (with the most confident examples of each) and the worst predictions."""
    slug, classes = slugify(head.name), head.classes
    rows, y_true, y_pred, confidence = view["rows"], view["y_true"], view["y_pred"], view["confidence"]
    sub = section.sub(f"head-{slug}-pairs", "Most confused pairs")
    if view["pairs"]:
        sub.table(["true", "predicted as", "images", "share of the true class"],
                  [[d["true"], d["pred"], d["count"], d["share_of_true"]] for d in numbers["confused_pairs"]])
        for c, i, j in view["pairs"][:PAIR_GALLERIES]:
            picked = np.flatnonzero((y_true == i) & (y_pred == j))
            picked = picked[np.argsort(-confidence[picked], kind="stable")][:PAIR_EXAMPLES]
            sub.gallery(f"{slug}_pair_{i}_{j}", [tile(p, rows[k], [f"p={confidence[k]:.2f}"], thumbs) for k in picked],
                        caption=f"{classes[i]} → {classes[j]} ({c} images), most confident first:")
    else:
        sub.text("No confusions: every labelled image is predicted right.")
    sub = section.sub(f"head-{slug}-worst", "Worst examples")
    worst = view["worst"]
    if len(worst):
        sub.gallery(f"{slug}_worst", [tile(p, rows[k], [f"true {classes[y_true[k]]}", f"pred {classes[y_pred[k]]}",
                                                        f"conf {confidence[k]:.2f}"], thumbs) for k in worst],
                    caption="The most confident wrong predictions (label errors often hide here).")
    else:
        sub.text("No wrong predictions.")


def calibration_section(section: Section, head: HeadSpec, calib: dict) -> None:
    sub = section.sub(f"head-{slugify(head.name)}-calibration", "Calibration")
    sub.figure(f"{slugify(head.name)}_calibration", figs.calibration_figure(calib["bins"], calib["ece"], head.name),
               caption=f"Reliability over {CALIBRATION_BINS} confidence bins (of the top class's probability); "
                       f"ECE {calib['ece']:.3f}.")
    sub.table(["confidence bin", "images", "mean confidence", "accuracy"],
              [[f"{b['lo']:.1f}–{b['hi']:.1f}", b["count"], b["confidence"], b["accuracy"]] for b in calib["bins"]],
              collapsed=True, caption="reliability numbers")
