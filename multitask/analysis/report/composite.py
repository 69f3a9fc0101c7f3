"""The report's composite section: the 18x18 confusion, per-class F1, and which head causes the errors."""
from __future__ import annotations

import numpy as np

from ...heads import HeadSpec, composite_class_names, composite_decode
from ...metrics.figures import confusion_figure
from ...metrics.stats import class_scores, confusion_counts, macro_f1
from . import figures as figs
from .html import Section
from .predictions import Predictions, composite_pairs


def analyse_composite(p: Predictions):
    pairs = composite_pairs(p)
    if pairs is None:
        if p.composite:
            p.notes.append("composite: no image has every one of " + ", ".join(h.name for h in p.composite) +
                           " labelled; composite section skipped")
        return None
    rows, y_true, y_pred = pairs
    classes = composite_class_names(p.composite)
    counts = confusion_counts(y_true, y_pred, len(classes))
    per = class_scores(counts)
    precision, recall, f1, support = per["precision"], per["recall"], per["f1"], per["support"]
    numbers = {"heads": [h.name for h in p.composite], "classes": classes, "labelled": len(rows),
               "acc": float(np.mean(y_true == y_pred)),
               "f1": macro_f1(y_true, y_pred, len(classes), present_only=True),
               "f1_all_classes": macro_f1(y_true, y_pred, len(classes)),
               "precision": precision.tolist(), "recall": recall.tolist(), "f1_per_class": f1.tolist(),
               "support": support.tolist(), "confusion": counts.tolist(), "blame": blame(p.composite, y_true, y_pred)}
    section = Section(id="composite", title=f"Composite ({len(classes)} classes)")
    section.text(f"{len(rows):,} images with every head labelled: accuracy {numbers['acc']:.3f}, macro F1 "
                 f"{numbers['f1']:.3f} (over classes present, the competition metric; {numbers['f1_all_classes']:.3f} "
                 f"counting absent classes as 0).")
    sub = section.sub("composite-confusion", "Confusion matrix")
    block = len(classes) // p.composite[0].num_classes  # dashed lines between the groups of the first head
    sub.figure("composite_confusion", confusion_figure(counts, classes, "composite", block=block),
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

    def share(n: int) -> float:
        return n / errors if errors else 0.0

    only = off & (off.sum(1, keepdims=True) == 1)
    by_head = {h.name: {"only": int(only[:, k].sum()), "only_share": share(int(only[:, k].sum())),
                        "among": int(off[:, k].sum()), "among_share": share(int(off[:, k].sum()))}
               for k, h in enumerate(heads)}
    several = int((off.sum(1) > 1).sum())
    return {"errors": errors, "by_head": by_head, "several": several, "several_share": share(several)}
