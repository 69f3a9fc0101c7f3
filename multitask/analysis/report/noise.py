"""The report's label-noise suspects: labels that the out-of-fold probability of another class contradicts, in
the label-fix format so a reviewed copy goes straight back to training."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ...heads import UNLABELLED, composite_class_names
from .html import Section
from .predictions import Predictions, _cell, binned_head, tile

SUSPECT_TILES, SUSPECT_ROWS = 40, 100


def analyse_label_noise(p: Predictions, thumbs, threshold: float):
    """Images where the model gives another class than the label >= threshold: candidates for a label fix.
    (numbers with the suspects' CSV as numbers["table"], section)."""
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
               "table": suspects,   # label_noise_suspects.csv (written, then left out of report.json)
               "suspects": [{k: r[k] for k in ("image_id", "id", "head", "label", "suggested", "confidence")}
                            for r in records]}
    return numbers, section


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
