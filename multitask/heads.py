"""Heads as data: what each head predicts, how its labels are read, and the composite label.

A head is a `HeadSpec` built from config. The composite label over an ordered list of heads is a mixed-radix number:
for mask(3), gender(2), age(3) that is exactly ``mask*6 + gender*3 + age`` (the 18 competition classes). Encoding and
decoding live here and nowhere else.

A head with ``target: years`` (an age head learning from ages in years) predicts a distribution over whole years in
``years_range``; its class probabilities are that distribution summed over the head's `bins` (`year_classes` says
which class each year falls in). Its year logits travel beside the class output under `years_key(name)`.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from dataclasses import field as _field  # HeadSpec has a field named `field`
from typing import Literal, Mapping, Sequence

import numpy as np

UNLABELLED = -1
YEARS = "years"
YEARS_COLUMN_SUFFIX = "_years"   # a manifest's age_years: ages in years for the age head
# loss names that learn from the year target (implemented in losses.YEAR_LOSSES); a years head without one gets
# DEFAULT_YEARS_LOSS added to its mix, so `heads.age.target=years` alone makes the head learn from years
YEAR_LOSS_NAMES = ("ldl", "l1_years")
LOSS_NAMES = ("ce", "focal", "f1")   # the class losses (losses.LOSSES); plugins add theirs with register_loss
DEFAULT_YEARS_LOSS = {"ldl": 1.0}


def years_key(name: str) -> str:
    """The model-output / target key of a years head's year logits / ages in years: ``age`` -> ``age/years``."""
    return f"{name}/{YEARS}"


@dataclass
class HeadSpec:
    """One classification head. Built from the `heads:` mapping of a config (the key is the name)."""

    classes: list[str]
    name: str = ""
    weight: float = 1.0
    # loss mix: registry name -> share, e.g. {ce: 0.3, f1: 0.7}; names in multitask.model.losses.LOSSES
    loss: dict[str, float] = field(default_factory=lambda: {"ce": 1.0})
    label_smoothing: float = 0.0
    focal_gamma: float = 2.0
    # None, "auto" (inverse class frequency on the training split) or one weight per class
    class_weights: str | list[float] | None = None
    # raw metadata column the label comes from (defaults to the head name)
    field: str | None = None
    # numeric raw values (e.g. age in years) -> class index by these edges; eval_bins for scoring against the
    # competition's own classes (teams trained age with 58 but are always judged with 60)
    bins: list[float] | None = None
    eval_bins: list[float] | None = None
    # a head whose label is the composite of other heads (the single 18-class baseline): its classes are their product
    derive: list[str] | None = None
    hidden: int = 0
    dropout: float = 0.0
    # classes: logits over the classes (the plain head). years: logits over the whole years in years_range
    # (inclusive), trained with label-distribution learning against a Gaussian of years_sigma around the true age;
    # class probabilities are the year distribution summed over `bins`
    target: Literal["classes", "years"] = "classes"
    years_range: list[int] = _field(default_factory=lambda: [0, 100])
    years_sigma: float = 3.0

    @property
    def num_years(self) -> int:
        return self.years_range[1] - self.years_range[0] + 1

    def year_grid(self) -> np.ndarray:
        """The whole years a years head predicts over, as floats: years_range[0] .. years_range[1]."""
        return np.arange(self.years_range[0], self.years_range[1] + 1, dtype=np.float64)

    def year_classes(self) -> np.ndarray:
        """(num_years,) class index of each year: by the training `bins`, exactly as `label_array` bins an age."""
        return np.digitize(self.year_grid(), self.bins).astype(np.int64)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def source(self) -> str:
        return self.field or self.name

    def validate(self) -> None:
        assert self.name, "a head needs a name"
        if len(self.classes) < 2:
            raise ValueError(f"heads.{self.name}.classes: need at least 2 classes, got {self.classes}")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"heads.{self.name}.classes: duplicate class names in {self.classes}")
        for key in ("bins", "eval_bins"):
            edges = getattr(self, key)
            if edges is not None:
                if len(edges) != self.num_classes - 1:
                    raise ValueError(
                        f"heads.{self.name}.{key}: {self.num_classes} classes need {self.num_classes - 1} edges, "
                        f"got {list(edges)}")
                if any(b <= a for a, b in zip(edges, edges[1:])):   # an edge twice: a class no value falls in
                    raise ValueError(f"heads.{self.name}.{key}: edges must strictly increase, got {list(edges)}")
        if not self.loss or any(v < 0 for v in self.loss.values()):
            raise ValueError(f"heads.{self.name}.loss: need at least one loss with a share >= 0, got {self.loss}")
        if self.target == "years":
            self._validate_years()
        elif any(n in YEAR_LOSS_NAMES for n in self.loss):
            name = next(n for n in self.loss if n in YEAR_LOSS_NAMES)
            raise ValueError(f"heads.{self.name}.loss: '{name}' learns from ages in years; it needs "
                             f"heads.{self.name}.target=years")

    def _validate_years(self) -> None:
        key = f"heads.{self.name}"
        if self.derive or not self.bins:
            raise ValueError(f"{key}.target: years needs {key}.bins (the edges in years that make the classes), "
                             f"and a head of its own (no derive)")
        low_high = self.years_range
        if len(low_high) != 2 or low_high[0] < 0 or low_high[0] >= low_high[1]:
            raise ValueError(f"{key}.years_range: expected [first, last] whole years with 0 <= first < last, "
                             f"got {list(low_high)}")
        empty = [self.classes[c] for c in range(self.num_classes) if not (self.year_classes() == c).any()]
        if empty:
            raise ValueError(f"{key}.years_range: {list(low_high)} holds no whole year of class(es) "
                             f"{', '.join(empty)} (bins {list(self.bins)}); widen the range")


# ----------------------------------------------------------------------------------------------------- composite
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


# ----------------------------------------------------------------------------------------------------- labels
def label_array(spec: HeadSpec, frame, heads: Mapping[str, HeadSpec], *, eval: bool = False) -> np.ndarray:
    """Class indices for one head from a data frame (-1 = unlabelled).

    Ages in years (a numeric `<head>` column, as the competition's folders give, or a `<head>_years` column, as a
    manifest may) are binned by the head's `bins` (`eval_bins` when scoring); where a row has no years, the
    `<head>` column's class name or index is its label.
    """
    if spec.derive:
        parts = [heads[name] for name in spec.derive]
        return composite_encode({p.name: label_array(p, frame, heads, eval=eval) for p in parts}, parts)
    years = years_array(spec, frame)
    edges = (spec.eval_bins or spec.bins) if eval else spec.bins
    column = frame[spec.source] if spec.source in frame.columns else None
    if column is None or _numeric(column) and edges is not None:
        classes = np.full(len(frame), UNLABELLED, dtype=np.int64)
    else:
        classes = np.array([class_index(spec, value) for value in column], dtype=np.int64)
    if edges is None or not np.isfinite(years).any():
        return classes
    binned = np.digitize(np.nan_to_num(years, nan=0.0), edges)
    return np.where(np.isfinite(years), binned, classes).astype(np.int64)


def years_source(spec: HeadSpec) -> str:
    """A manifest's column of ages in years for this head: `<head>_years` (e.g. age_years)."""
    return f"{spec.source}{YEARS_COLUMN_SUFFIX}"


def years_array(spec: HeadSpec, frame) -> np.ndarray:
    """Ages in years (float, NaN where unknown): the `<head>_years` column, else a numeric `<head>` column (the
    competition's folder ages); a `<head>` column of class names or indices gives none (its rows train a years
    head's class losses only)."""
    for name in (years_source(spec), spec.source):
        if name in frame.columns and _numeric(frame[name]):
            return frame[name].to_numpy(dtype=np.float64)
    return np.full(len(frame), np.nan)


def _numeric(column) -> bool:
    """A column of numbers (numpy's or pandas' own dtypes; pandas' string dtype is not one)."""
    return getattr(column.dtype, "kind", "O") in "iuf"


def expected_years(year_probs: np.ndarray, spec: HeadSpec) -> np.ndarray:
    """(N,) expected age, sum over years of year x p, from a years head's (N, num_years) year distribution."""
    return np.asarray(year_probs, dtype=np.float64) @ spec.year_grid()


def class_index(spec: HeadSpec, value) -> int:
    """A class name or index -> index; blank / NaN / -1 -> -1; anything else is an error naming the choices."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return UNLABELLED
    text = str(value).strip()
    if text in ("", "-1", "nan", "None"):
        return UNLABELLED
    if text in spec.classes:
        return spec.classes.index(text)
    lowered = [c.lower() for c in spec.classes]
    if text.lower() in lowered:
        return lowered.index(text.lower())
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        number = float(value)
    else:   # ASCII digits only (float() would read '٢' or '1_0'); '2.0' is how pandas writes a float column's 2
        found = re.fullmatch(r"([0-9]+)(\.0*)?", text)
        number = float(found.group(1)) if found else None
    if number is not None and number.is_integer() and 0 <= int(number) < spec.num_classes:
        return int(number)
    raise ValueError(f"head {spec.name}: unknown class {value!r}; expected one of {spec.classes} "
                     f"or an index 0..{spec.num_classes - 1}")


def resolve_heads(heads: Mapping[str, HeadSpec]) -> dict[str, HeadSpec]:
    """Fill names and check cross-references (derive) once, after config load."""
    out = {}
    for name, spec in heads.items():
        spec.name = name
        spec.validate()
        if spec.target == "years" and not any(n in YEAR_LOSS_NAMES for n in spec.loss):
            spec.loss = {**DEFAULT_YEARS_LOSS, **spec.loss}
        out[name] = spec
    for spec in out.values():
        if spec.derive:
            unknown = [d for d in spec.derive if d not in out]
            if unknown:
                raise ValueError(f"heads.{spec.name}.derive: unknown head(s) {unknown}; configured: {list(out)}")
            size = composite_size([out[d] for d in spec.derive])
            if size != spec.num_classes:
                raise ValueError(f"heads.{spec.name}: derives {spec.derive} with {size} combinations "
                                 f"but lists {spec.num_classes} classes")
    return out
