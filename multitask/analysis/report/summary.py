"""The report's summary: the first section (scores, weakest classes, which head causes the errors), the headline
cards, and the key numbers the trackers get."""
from __future__ import annotations

from ...utils.text import fmt
from .html import Section
from .predictions import Predictions


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
    issues = numbers["label_issues"]
    section.text(f"{issues['count']:,} label-issue candidates found by cleanlab, {issues['csv_rows']:,} of them in "
                 f"{issues['csv']} (see Label issues).")


def summary_cards(numbers: dict) -> list[tuple[str, str]]:
    cards = [("images", f"{numbers['images']:,}")]
    if "composite" in numbers:
        cards.append(("composite macro F1", fmt(numbers["composite"]["f1"])))
    cards += [(f"{name} macro F1", fmt(h["f1"])) for name, h in numbers["heads"].items()]
    cards.append(("label issues", f"{numbers['label_issues']['count']:,}"))
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
    out["label_issues/count"] = numbers["label_issues"]["count"]
    return out
