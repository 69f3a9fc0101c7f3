"""Decisions: a head's class is argmax(log p + offsets), the one place offsets meet probabilities.

    labels = apply_offsets(log_probabilities(p), offsets["age"])      # (N,) classes; the search uses this too
    labels = decide(probs, heads, offsets)                             # {head: (N,)}: predict, the report
    code = decide_joint(joint, composite, offsets)                     # predict --joint

Offsets come from decisions.json (file.py; fitted by fit.py) and only move decided labels:
probabilities stay what the model said. A head without offsets, or with all zeros, is the plain argmax.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from ..heads import HeadSpec, composite_decode

FLOOR = 1e-12   # probabilities below it count as it: log 0 would make an offset meaningless


def log_probabilities(p: np.ndarray) -> np.ndarray:
    return np.log(np.clip(np.asarray(p, dtype=np.float64), FLOOR, None))


def apply_offsets(logp: np.ndarray, offsets: np.ndarray | None) -> np.ndarray:
    """(N,) decided classes: argmax of log-probabilities (N, C) plus one offset per class (None: plain argmax)."""
    if offsets is None or not np.any(offsets):
        return np.asarray(logp).argmax(1)
    return (np.asarray(logp) + np.asarray(offsets, dtype=np.float64)[None, :]).argmax(1)


def decide(probs: Mapping[str, np.ndarray], heads: Sequence[HeadSpec],
           offsets: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """{head: decided class index}: argmax of log p + offsets; a head without offsets (or all zero) is plain argmax."""
    out = {}
    for head in heads:
        off = (offsets or {}).get(head.name)
        p = np.asarray(probs[head.name], dtype=np.float64)
        out[head.name] = p.argmax(1) if off is None or not np.any(off) else apply_offsets(log_probabilities(p), off)
    return out


def decide_joint(joint: np.ndarray, composite: Sequence[HeadSpec],
                 offsets: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
    """The composite label from a joint distribution (predict --joint): argmax of log joint + each class's offset, the
    sum of its heads' offsets (the offsets of the product of the heads' distributions)."""
    joint = np.asarray(joint, dtype=np.float64)
    if not offsets or not any(np.any(offsets.get(h.name, 0)) for h in composite):
        return joint.argmax(1)
    parts = composite_decode(np.arange(joint.shape[1]), composite)
    shift = sum(np.asarray(offsets[h.name])[parts[h.name]] for h in composite if h.name in offsets)
    return apply_offsets(log_probabilities(joint), shift)


def average_offsets(parts: Sequence[tuple[dict[str, np.ndarray], float, set[str]]], heads: Sequence[HeadSpec]
                    ) -> dict[str, np.ndarray]:
    """Weighted mean of several members' offsets per head, over the members that predict the head (their weights
    renormalised); a member without offsets for a head it predicts counts as zeros: its plain argmax."""
    out = {}
    for head in heads:
        have = [(offsets, w) for offsets, w, names in parts if head.name in names]
        total = sum(w * offsets.get(head.name, np.zeros(head.num_classes)) for offsets, w in have)
        if len(have) < len(parts):
            total = total / sum(w for _, w in have)
        if np.any(total):
            out[head.name] = np.asarray(total, dtype=np.float64)
    return out


def describe(offsets: Mapping[str, np.ndarray], heads: Sequence[HeadSpec]) -> str:
    """'age >=60 +0.40, mask incorrect -0.20' (non-zero offsets only) or 'none'."""
    items = [f"{h.name} {c} {v:+.2f}" for h in heads if h.name in offsets
             for c, v in zip(h.classes, offsets[h.name]) if v]
    return ", ".join(items) or "none"


