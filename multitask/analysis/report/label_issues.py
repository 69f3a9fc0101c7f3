"""The report's label issues: per head, the labels that confident learning on the out-of-fold probabilities says the
images contradict (cleanlab.filter.find_label_issues), most doubtful first, with the suggested fixes in the
data.label_fixes format (id,field,value,image) so a reviewed copy goes straight back to training.

Out-of-fold probabilities are what make this work: each image's probability comes from a model that never trained on
it (a `--folds all` run gives every image one), so a wrong label cannot have been memorised into agreeing with itself.
"""
from __future__ import annotations

import warnings

import cleanlab
import numpy as np
import pandas as pd
from cleanlab.filter import find_label_issues

from ...data.competition import FIX_COLUMNS, parse_label_fix
from ...heads import UNLABELLED, HeadSpec, composite_class_names
from ...utils.errors import UserError
from .html import Section
from .predictions import Predictions, _cell, binned_head, slugify, tile

CSV = "label_fixes_suggested.csv"
MIN_ROWS = 20          # fewer labelled images leave cleanlab's per-class noise rates to chance
MIN_PER_CLASS = 1      # cleanlab's min_examples_per_class: a class with no more labels than this is never flagged
FILTER_BY, RANKED_BY = "prune_by_noise_rate", "self_confidence"   # cleanlab's defaults, named so report.json says
TILES, ROWS = 12, 50   # per head on the page; the CSV and report.json hold every candidate


def analyse_label_issues(p: Predictions, thumbs):
    """(numbers with the suggested fixes' CSV as numbers["table"], section)."""
    section = Section(id="label-issues", title="Label issues")
    heads, records, checked = {}, [], checked_heads(p)
    for head in checked:
        found, numbers = head_issues(p, head)
        heads[head.name], records = numbers, records + found
    fixes, refused = suggested_fixes(p, records)
    section.text(f"{len(records):,} labels that cleanlab's confident learning (find_label_issues, {FILTER_BY}) "
                 f"finds the out-of-fold probabilities contradict, per head ranked by the probability of the given "
                 f"label, lowest first. {len(fixes):,} are in {CSV} (id,field,value,image: the data.label_fixes "
                 f"format) with the most likely other class as the value, for review; nothing is changed "
                 f"automatically.")
    add_caveats(section, p, records, refused)
    for head in checked:
        show_head(section.sub(f"label-issues-{slugify(head.name)}", f"Label issues: {head.name}"), p, head,
                  [r for r in records if r["head"] == head.name], heads[head.name], thumbs)
    numbers = {"method": f"cleanlab.filter.find_label_issues(filter_by={FILTER_BY}, "
                         f"return_indices_ranked_by={RANKED_BY})",
               "cleanlab": cleanlab.__version__, "count": len(records), "csv": CSV, "csv_rows": len(fixes),
               "table": fixes,   # label_fixes_suggested.csv (written, then left out of report.json)
               "heads": heads}
    return numbers, section


def checked_heads(p: Predictions) -> list[HeadSpec]:
    """The labelled heads; a derived head (the 18-class composite) is left to the heads it is built from."""
    composite_names = composite_class_names(p.composite) if p.composite else None
    return [h for h in p.heads if h.name in p.targets and not h.derive
            and not (composite_names and h.classes == composite_names)]


def head_issues(p: Predictions, head: HeadSpec) -> tuple[list[dict], dict]:
    """(the head's candidates, most doubtful first; its numbers). A head cleanlab cannot judge is skipped, saying
    why, rather than failing the report."""
    y = p.targets[head.name]
    rows = np.flatnonzero(y != UNLABELLED)
    counts = np.bincount(y[rows], minlength=head.num_classes)
    numbers = {"labelled": len(rows), "count": 0, "skipped": None, "issues": [],
               "unflaggable": [c for c, n in zip(head.classes, counts) if 0 < n <= MIN_PER_CLASS]}
    if len(rows) < MIN_ROWS:
        numbers["skipped"] = f"only {len(rows)} labelled image(s); label issues need at least {MIN_ROWS}"
    elif (counts > 0).sum() < 2:
        numbers["skipped"] = (f"every labelled image is {head.classes[int(counts.argmax())]}: a single class, "
                              f"so no label can be told apart from another")
    if numbers["skipped"]:
        return [], numbers
    labels = y[rows]
    probs = p.probs[head.name][rows].astype(np.float64)
    probs /= probs.sum(1, keepdims=True)   # the table's 6 decimals need not sum to exactly 1
    with warnings.catch_warnings():
        # the classes it means are in numbers["unflaggable"], shown by name on the page
        warnings.filterwarnings("ignore", message="May not flag all label issues")
        ranked = find_label_issues(labels, probs, filter_by=FILTER_BY, return_indices_ranked_by=RANKED_BY,
                                   min_examples_per_class=MIN_PER_CLASS, n_jobs=1)  # n_jobs=1: no worker processes
    records = []
    for rank, k in enumerate(ranked, start=1):
        other = probs[k].copy()
        other[labels[k]] = -1.0
        suggested = int(other.argmax())
        row = int(rows[k])
        image_id = str(p.table["image_id"].iloc[row])
        records.append({"rank": rank, "row": row, "head": head.name, "image_id": image_id,
                        "id": _cell(p.table, "group", row) or image_id,   # label fixes name the person
                        "image": _cell(p.table, "stem", row), "label": head.classes[labels[k]],
                        "suggested": head.classes[suggested], "p_label": float(probs[k, labels[k]]),
                        "p_suggested": float(probs[k, suggested])})
    numbers["count"] = len(records)
    numbers["issues"] = [{k: r[k] for k in ("rank", "image_id", "id", "image", "label", "suggested", "p_label",
                                            "p_suggested")} for r in records]
    return records, numbers


def suggested_fixes(p: Predictions, records: list[dict]) -> tuple[pd.DataFrame, dict[str, str]]:
    """(the CSV's rows, {head: why its candidates are not in it}): a row goes in only where data.label_fixes'
    own reader accepts it, so the reviewed file loads back as it is."""
    fields = {h.name: h.source for h in p.heads}
    rows, refused = [], {}
    for r in records:
        row = {"id": r["id"], "field": fields[r["head"]], "value": r["suggested"], "image": r["image"]}
        try:
            parse_label_fix(row, where=f"{r['head']} of {r['image_id']}")
        except UserError as err:
            refused.setdefault(r["head"], str(err))
            continue
        rows.append(row)
    return pd.DataFrame(rows, columns=list(FIX_COLUMNS)).drop_duplicates(ignore_index=True), refused


def add_caveats(section: Section, p: Predictions, records: list[dict], refused: dict[str, str]) -> None:
    per_person = person_heads(p)
    if any(r["head"] in per_person and r["image"] for r in records):
        section.note(f"{', '.join(per_person)} belong to the person (one label for all of a person's photos here): "
                     f"the CSV names the photo that raised the doubt; clear its image column to fix every photo of "
                     f"that person.")
    binned = binned_head(p)
    if binned is not None and binned.name in refused:
        section.note(f"{binned.name} candidates are listed here but not in the CSV: a label fix for "
                     f"{binned.source} takes the number its classes are binned from (years), so add the row "
                     f"id,{binned.source},<years> after checking the photos.")
    for head, why in refused.items():
        if binned is None or head != binned.name:
            section.note(f"{head} candidates are listed here but not in the CSV, which data.label_fixes would "
                         f"refuse: {why}.")


def show_head(sub: Section, p: Predictions, head: HeadSpec, records: list[dict], numbers: dict, thumbs) -> None:
    if numbers["skipped"]:
        sub.note(f"{head.name}: not checked, {numbers['skipped']}.")
        return
    sub.text(f"{numbers['count']:,} of {numbers['labelled']:,} labelled images flagged, lowest probability of the "
             f"given label first.")
    if numbers["unflaggable"]:
        sub.note(f"{', '.join(numbers['unflaggable'])}: at most {MIN_PER_CLASS} labelled image(s), too few for "
                 f"cleanlab to flag a label of that class.")
    if records:
        sub.gallery(f"label_issues_{slugify(head.name)}",
                    [tile(p, r["row"], [f"{r['label']} → {r['suggested']}", f"p(label)={r['p_label']:.2f}"], thumbs)
                     for r in records[:TILES]])
        sub.table(["rank", "image", "person", "label", "suggested", "p(label)", "p(suggested)"],
                  [[r["rank"], r["image_id"], r["id"], r["label"], r["suggested"], r["p_label"], r["p_suggested"]]
                   for r in records[:ROWS]], caption=f"first {min(len(records), ROWS)} of {len(records)}")


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
