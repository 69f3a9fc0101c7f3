"""The report's age section: error by true age in years, a years head's estimate against the truth, and what
shifting the oldest class's decision would do."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ...decisions.apply import apply_offsets, log_probabilities
from ...heads import UNLABELLED, HeadSpec, composite_decode, composite_encode
from ...metrics.stats import macro_f1
from ...metrics.table import years_column
from . import figures as figs
from .html import Section
from .predictions import Predictions, binned_head, composite_pairs

BIASES = np.round(np.linspace(-2.0, 2.0, 21), 3)


def analyse_age(p: Predictions):
    head = binned_head(p)
    if head is None or head.name not in p.targets or not (p.targets[head.name] != UNLABELLED).any():
        p.notes.append("age: no labelled head with bins (a bins/<head> column); age error by years and the "
                       "threshold sweep are skipped")
        return None
    section = Section(id="age", title=f"Age ({head.name})")
    numbers = {"head": head.name}
    y = p.targets[head.name]
    pred = p.decided(head.name)
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
    """Shift the log-probability of the head's top class (the oldest bin) by each bias, from the plain argmax (no
    tuned offset); the head's F1, and the composite's with the other heads as decided, after each shift."""
    k = head.num_classes - 1
    log_p = log_probabilities(p.probs[head.name])
    y = p.targets[head.name]
    labelled = y != UNLABELLED
    pairs = composite_pairs(p) if any(h.name == head.name for h in p.composite) else None
    if pairs is not None:
        rows, y_true, y_pred = pairs
        parts = composite_decode(y_pred, p.composite)
        size = int(np.prod([h.num_classes for h in p.composite]))
    head_f1, comp_f1 = [], []
    for b in BIASES:
        head_pred = apply_offsets(log_p, np.eye(head.num_classes)[k] * b)
        head_f1.append(macro_f1(y[labelled], head_pred[labelled], head.num_classes))
        if pairs is not None:
            codes = composite_encode({**parts, head.name: head_pred[rows]}, p.composite)
            comp_f1.append(macro_f1(y_true, codes, size, present_only=True))
    scores = comp_f1 if pairs is not None else head_f1
    zero = int(np.argmin(np.abs(BIASES)))
    best = max(range(len(BIASES)), key=lambda i: (round(scores[i], 12), -abs(BIASES[i])))
    return {"class": head.classes[k], "biases": BIASES.tolist(), "head_f1": head_f1,
            "composite_f1": comp_f1 if pairs is not None else None,
            "metric": "composite" if pairs is not None else head.name,
            "best_bias": float(BIASES[best]), "best_f1": scores[best], "f1_at_zero": scores[zero],
            "gain": scores[best] - scores[zero]}
