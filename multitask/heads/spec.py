"""What a head is: `HeadSpec`, built from a config's `heads:` mapping (the key is its name), and the names a head's
outputs and targets go by.

A head with ``target: years`` (an age head learning from ages in years) predicts a distribution over whole years in
``years_range``; its class probabilities are that distribution summed over the head's `bins` (`year_classes` says
which class each year falls in). Its year logits travel beside the class output under `years_key(name)`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from dataclasses import field as _field  # HeadSpec has a field named `field`
from typing import Literal

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


def expected_years(year_probs: np.ndarray, spec: HeadSpec) -> np.ndarray:
    """(N,) expected age, sum over years of year x p, from a years head's (N, num_years) year distribution."""
    return np.asarray(year_probs, dtype=np.float64) @ spec.year_grid()
