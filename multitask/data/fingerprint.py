"""What a run trained on, in a few bytes: per source, a sha256 over each row's image, person, fold and labels.

    prints = data_fingerprint(cfg)               # {source: {"images": 112, "sha256": "ab12..."}} (no pixel read)
    changed = fingerprint_change(saved, prints)  # "source extra: 112 images ... when saved, now ..." or None

A checkpoint keeps it, so a resume on other data (a manifest's labels edited, photos added, a split that moved) is
noticed instead of continuing an optimisation half-way on something else. An image is named by its folder and file,
not its whole path: the same data at another path (another machine, data.root changed) is the same data.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import Config
from .sources import Source, rows_and_folds, source_labels


def data_fingerprint(cfg: Config) -> dict[str, dict]:
    """The fingerprint of the data `cfg` trains on, read as a run reads it (rows, folds, training labels)."""
    sources, frame = rows_and_folds(cfg)
    return fingerprint_of(sources, frame, source_labels(sources, cfg, eval=False))


def fingerprint_of(sources: list[Source], frame: pd.DataFrame, labels: dict[str, np.ndarray]) -> dict[str, dict]:
    """{source: {"images": rows, "sha256": hex}} over each row's folder/file, group, fold and `labels` (the heads'
    training labels, ages in years)."""
    table = pd.DataFrame({"image": [f"{Path(p).parent.name}/{Path(p).name}" for p in frame["path"]],
                          "group": frame["group"].astype(str), "fold": frame["fold"].astype(str),
                          **{name: [repr(float(v)) for v in labels[name]] for name in sorted(labels)}})
    rows = table.apply("\t".join, axis=1) if len(table) else pd.Series([], dtype=str)
    out = {}
    for source in sources:
        mine = rows[(frame["source"] == source.name).to_numpy()]
        digest = hashlib.sha256("\t".join(table.columns).encode())
        for row in mine:
            digest.update(row.encode() + b"\n")
        out[source.name] = {"images": int(len(mine)), "sha256": digest.hexdigest()}
    return out


def fingerprint_change(saved: dict | None, now: dict) -> str | None:
    """What differs between a checkpoint's fingerprint and the data's now (None: the same, or nothing saved)."""
    if not saved or saved == now:
        return None
    for name in sorted(set(saved) | set(now)):
        before, after = saved.get(name), now.get(name)
        if before == after:
            continue
        if before is None or after is None:
            return f"source {name} is {'new' if before is None else 'gone'}"
        count = (f"{before['images']:,} images then, {after['images']:,} now" if before["images"] != after["images"]
                 else f"the same {after['images']:,} images")
        return f"source {name}: {count}, and its files, people, folds or labels differ"
    return None
