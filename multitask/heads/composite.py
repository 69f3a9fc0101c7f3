"""The composite label and the joint maths over heads.

The composite label over an ordered list of heads is a mixed-radix number: for mask(3), gender(2), age(3) that is
exactly ``mask*6 + gender*3 + age`` (the 18 competition classes). Encoding and decoding live here and nowhere else;
so do the joint distribution (the product of independent heads), its marginals, and a derived head's components.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from .spec import UNLABELLED, HeadSpec, years_key


def composite_radices(heads: Sequence[HeadSpec]) -> list[int]:
    return [h.num_classes for h in heads]


def composite_size(heads: Sequence[HeadSpec]) -> int:
    return math.prod(composite_radices(heads))


def composite_encode(labels: Mapping[str, np.ndarray | int], heads: Sequence[HeadSpec]) -> np.ndarray:
    """Mixed radix over the head order; -1 where any component is unlabelled."""
    arrays = [np.asarray(labels[h.name], dtype=np.int64) for h in heads]
    code = np.zeros(np.broadcast(*arrays).shape, dtype=np.int64)
    missing = np.zeros_like(code, dtype=bool)
    for head, values in zip(heads, arrays):
        if np.any(values >= head.num_classes):
            raise ValueError(f"head {head.name}: label out of range 0..{head.num_classes - 1}")
        code = code * head.num_classes + np.where(values < 0, 0, values)
        missing |= values < 0
    return np.where(missing, UNLABELLED, code)


def composite_decode(code: np.ndarray | int, heads: Sequence[HeadSpec]) -> dict[str, np.ndarray]:
    """Inverse of `composite_encode`; -1 stays -1 for every head."""
    code = np.asarray(code, dtype=np.int64)
    if np.any(code >= composite_size(heads)):
        raise ValueError(f"composite label out of range 0..{composite_size(heads) - 1}")
    missing = code < 0
    rest = np.where(missing, 0, code)
    out: dict[str, np.ndarray] = {}
    for head in reversed(heads):
        out[head.name] = np.where(missing, UNLABELLED, rest % head.num_classes)
        rest = rest // head.num_classes
    return {h.name: out[h.name] for h in heads}


def composite_class_names(heads: Sequence[HeadSpec]) -> list[str]:
    codes = np.arange(composite_size(heads))
    parts = composite_decode(codes, heads)
    return ["/".join(h.classes[parts[h.name][i]] for h in heads) for i in codes]


def joint_probabilities(probs: Mapping[str, np.ndarray], heads: Sequence[HeadSpec]) -> np.ndarray:
    """(N, prod) product of independent head probabilities, columns in composite order.

    Numpy arrays or torch tensors (the ONNX export traces this into its `composite` output)."""
    joint, width = None, 1
    for head in heads:
        p = _array(probs[head.name])
        width *= head.num_classes
        joint = p if joint is None else (joint[:, :, None] * p[:, None, :]).reshape(-1, width)
    return joint


def marginal_probabilities(joint: np.ndarray, heads: Sequence[HeadSpec]) -> dict[str, np.ndarray]:
    """Per-head probabilities from a (N, prod) composite distribution (e.g. a single 18-class head); numpy or torch."""
    shaped = _array(joint).reshape(-1, *composite_radices(heads))
    out = {}
    for axis, head in enumerate(heads, start=1):
        other = tuple(a for a in range(1, shaped.ndim) if a != axis)
        out[head.name] = shaped.sum(axis=other)
    return out


def expand_heads(heads: Sequence[HeadSpec], all_heads: Mapping[str, HeadSpec]) -> list[HeadSpec]:
    """`heads` plus the components of any derived head among them (the 18-class baseline gives mask, gender, age),
    each once, in order: the heads every consumer of a model's probabilities sees."""
    out = list(heads)
    for head in heads:
        for name in head.derive or ():
            if all(h.name != name for h in out):
                out.append(all_heads[name])
    return out


def expand_derived(probs: Mapping[str, np.ndarray], heads: Sequence[HeadSpec],
                   all_heads: Mapping[str, HeadSpec]) -> tuple[list[HeadSpec], dict[str, np.ndarray]]:
    """(`expand_heads`, probabilities with the marginals of each derived head's components added)."""
    out = dict(probs)
    for head in heads:
        if head.derive:
            parts = [all_heads[n] for n in head.derive]
            for name, p in marginal_probabilities(probs[head.name], parts).items():
                out.setdefault(name, p)
    return expand_heads(heads, all_heads), out


def expand_targets(targets: Mapping[str, np.ndarray], heads: Sequence[HeadSpec],
                   all_heads: Mapping[str, HeadSpec]) -> dict[str, np.ndarray]:
    """Targets with each derived head's code decoded into its components (a component's own labels win)."""
    out = dict(targets)
    for head in heads:
        if head.derive and head.name in targets:
            for name, values in composite_decode(targets[head.name], [all_heads[n] for n in head.derive]).items():
                out.setdefault(name, values)
    return out


def member_joint(probs: Mapping[str, np.ndarray], heads: Sequence[HeadSpec], composite: Sequence[HeadSpec]):
    """A model's distribution over the composite classes: its own derived head when it has one (it learnt the
    correlations), else the product of its independent heads (numpy or torch, as `joint_probabilities`)."""
    names = [h.name for h in composite]
    own = next((h for h in heads if h.derive == names), None)
    return probs[own.name] if own is not None else joint_probabilities(probs, composite)


def output_keys(heads: Sequence[HeadSpec]) -> list[str]:
    """What a model's probabilities hold, in order: each head's class probabilities, then each years head's year
    distribution under `years_key` (TorchModel, OnnxModel and the export's outputs all use this order)."""
    return [h.name for h in heads] + [years_key(h.name) for h in heads if h.target == "years"]


def _array(values):
    # torch tensors pass through untouched (no torch import here); lists and scalars become numpy
    return values if hasattr(values, "reshape") else np.asarray(values)
