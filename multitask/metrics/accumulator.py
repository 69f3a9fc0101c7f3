"""Per-head and composite metrics over an epoch (the counting is stats.py's).

    acc = MetricAccumulator(heads=cfg.trained_heads(), composite=cfg.composite_heads())
    for images, targets in loader:
        acc.update(model(images), targets)       # softmax kept on CPU, no .item() per step
    acc.sync()                                   # DDP: gather every rank's rows first
    metrics = acc.compute()   # {"mask/acc", "mask/f1", "mask/f1_wear", ..., "composite/f1", "mean/f1"}

The competition metric is `composite/f1`: macro F1 over the composite classes present in truth or prediction, exactly
`sklearn.metrics.f1_score(average="macro")` (stats.macro_f1 with present_only). The composite can come from the
component heads trained directly or from a derived head (a single 18-class head whose `derive` lists the
components); a derived head's prediction is also decoded into component predictions, whose per-head metrics are
reported under the components' names.
Unlabelled rows (-1) are left out of the head they lack, and out of the composite. A years head (`target: years`)
also reports `<head>/mae_years`: mean |expected age - age| in years over the rows whose age in years is known.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from ..heads import UNLABELLED, HeadSpec, composite_decode, composite_encode, composite_size, expected_years, years_key
from .stats import confusion_counts, head_scores, macro_f1


def decoded_parts(heads: list[HeadSpec], composite: list[HeadSpec]) -> dict[str, list[HeadSpec]]:
    """{derived head: its components} for the derived heads whose components are all known (trained or in the
    composite): their predictions are decoded into the components'."""
    known = {h.name: h for h in composite} | {h.name: h for h in heads}
    return {h.name: [known[n] for n in h.derive] for h in heads if h.derive and all(n in known for n in h.derive)}


def scored_heads(heads: list[HeadSpec], composite: list[HeadSpec]) -> dict[str, HeadSpec]:
    """Every head that gets metrics: the trained ones, then the components only a derived head predicts."""
    specs = {h.name: h for h in heads}
    for parts in decoded_parts(heads, composite).values():
        for part in parts:
            specs.setdefault(part.name, part)
    return specs


def metric_names(heads: list[HeadSpec], composite: list[HeadSpec] | None = None) -> list[str]:
    """Every key `compute()` can return for these heads (a head without labelled rows leaves its own out): what a
    monitored metric is checked against before anything trains."""
    composite = list(composite or [])
    specs = scored_heads(heads, composite)
    names = [f"{n}/{k}" for n, h in specs.items() for k in ("acc", "f1", *(f"f1_{c}" for c in h.classes))]
    if composite and all(h.name in specs for h in composite):
        names += ["composite/acc", "composite/f1"]
    return names + ["mean/f1"] + [f"{h.name}/mae_years" for h in heads if h.target == "years"]


class MetricAccumulator:
    """Collects softmax probabilities and targets per trained head; computes metrics once per epoch."""

    def __init__(self, *, heads: list[HeadSpec], composite: list[HeadSpec] | None = None):
        assert heads, "MetricAccumulator needs at least one head"
        self.heads = list(heads)
        self.composite = list(composite or [])
        self.years_heads = [h for h in self.heads if h.target == "years"]
        self.reset()

    def reset(self) -> None:
        self._probs: dict[str, list[Tensor]] = {h.name: [] for h in self.heads}
        self._targets: dict[str, list[Tensor]] = {h.name: [] for h in self.heads}
        # years heads: (expected age, age in years or NaN) per row, under years_key(name)
        for h in self.years_heads:
            self._probs[years_key(h.name)], self._targets[years_key(h.name)] = [], []
        self._synced = False

    @torch.no_grad()
    def update(self, outputs: dict[str, Tensor], targets: dict[str, Tensor] | None = None) -> None:
        """A head missing from `targets` (e.g. inference without labels) is stored as unlabelled."""
        targets = targets or {}
        for head in self.heads:
            probs = outputs[head.name].detach().float().softmax(-1).cpu()
            target = targets.get(head.name)
            target = (torch.full((len(probs),), UNLABELLED, dtype=torch.long) if target is None
                      else target.detach().long().cpu())
            assert len(target) == len(probs), f"{head.name}: {len(probs)} outputs but {len(target)} targets"
            self._probs[head.name].append(probs)
            self._targets[head.name].append(target)
        for head in self.years_heads:
            key = years_key(head.name)
            year_probs = outputs[key].detach().float().softmax(-1).cpu().numpy()
            truth = targets.get(key)
            self._probs[key].append(torch.from_numpy(expected_years(year_probs, head)))
            self._targets[key].append(torch.full((len(year_probs),), float("nan"), dtype=torch.float64)
                                      if truth is None else truth.detach().double().cpu())

    def sync(self) -> None:
        """Gather every DDP rank's rows (rank order) so all ranks compute the same metrics. No-op without DDP.

        A DistributedSampler pads the last batch by repeating samples; those repeats are counted as they come.
        """
        if self._synced or not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        local = {name: (self._cat(self._probs[name]).numpy(), self._cat(self._targets[name]).numpy())
                 for name in self._probs}
        gathered: list = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, local)
        for name in self._probs:
            self._probs[name] = [torch.from_numpy(part[name][0]) for part in gathered]
            self._targets[name] = [torch.from_numpy(part[name][1]) for part in gathered]
        self._synced = True

    @staticmethod
    def _cat(parts: list[Tensor]) -> Tensor:
        return torch.cat(parts) if parts else torch.zeros(0)

    def probabilities(self) -> dict[str, np.ndarray]:
        return {h.name: self._cat(self._probs[h.name]).numpy().reshape(-1, h.num_classes) for h in self.heads}

    def targets(self) -> dict[str, np.ndarray]:
        return {h.name: self._cat(self._targets[h.name]).numpy().astype(np.int64) for h in self.heads}

    def years(self) -> dict[str, np.ndarray]:
        """{years head: (N,) expected age in years}."""
        return {h.name: self._cat(self._probs[years_key(h.name)]).numpy().astype(np.float64)
                for h in self.years_heads}

    def true_years(self) -> dict[str, np.ndarray]:
        """{years head: (N,) age in years, NaN where unknown}."""
        return {h.name: self._cat(self._targets[years_key(h.name)]).numpy().astype(np.float64)
                for h in self.years_heads}

    def subset(self, rows: np.ndarray) -> "MetricAccumulator":
        """The same heads over some of the rows (in the order they were added, every rank's after sync): one
        source's validation images, say. Its compute() scores those rows alone."""
        out = MetricAccumulator(heads=self.heads, composite=self.composite)
        for name in self._probs:
            out._probs[name] = [self._cat(self._probs[name])[rows]]
            out._targets[name] = [self._cat(self._targets[name])[rows]]
        out._synced = True
        return out

    # --------------------------------------------------------------------------------------------- computing
    def _predictions(self) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, HeadSpec]]:
        """{head: (y_true, y_pred)} for trained heads, plus components decoded from derived heads.

        A component trained directly keeps its own predictions; a derived head only fills in the ones not trained.
        """
        probs, targets = self.probabilities(), self.targets()
        pairs = {h.name: (targets[h.name], probs[h.name].argmax(-1)) for h in self.heads}
        for head, parts in decoded_parts(self.heads, self.composite).items():
            y_true, y_pred = pairs[head]
            true_parts, pred_parts = composite_decode(y_true, parts), composite_decode(y_pred, parts)
            for part in parts:
                if part.name not in pairs:
                    pairs[part.name] = (true_parts[part.name], pred_parts[part.name])
        return pairs, scored_heads(self.heads, self.composite)

    def compute(self) -> dict[str, float]:
        """Flat metrics; a head with no labelled row is left out (no keys) rather than reported as NaN."""
        pairs, specs = self._predictions()
        out: dict[str, float] = {}
        trained_f1 = []
        for name, (y_true, y_pred) in pairs.items():
            result = head_scores(y_true, y_pred, specs[name].num_classes)
            if result["n"] == 0:
                continue
            out[f"{name}/acc"] = result["acc"]
            out[f"{name}/f1"] = result["f1"]
            for cls, value in zip(specs[name].classes, result["f1_per_class"]):
                out[f"{name}/f1_{cls}"] = float(value)
            if any(h.name == name for h in self.heads):
                trained_f1.append(result["f1"])
        composite = self._composite_labels(pairs)
        if composite is not None and len(composite[0]):
            y_true, y_pred = composite
            out["composite/acc"] = float(np.mean(y_true == y_pred))
            out["composite/f1"] = macro_f1(y_true, y_pred, composite_size(self.composite), present_only=True)
        if trained_f1:
            out["mean/f1"] = float(np.mean(trained_f1))
        truth = self.true_years()
        for name, estimate in self.years().items():
            known = np.isfinite(truth[name])
            if known.any():
                out[f"{name}/mae_years"] = float(np.abs(estimate[known] - truth[name][known]).mean())
        return out

    def _composite_labels(self, pairs) -> tuple[np.ndarray, np.ndarray] | None:
        """(y_true, y_pred) composite codes on rows where every component is labelled; None if a head is missing."""
        if not self.composite or not all(h.name in pairs for h in self.composite):
            return None
        y_true = composite_encode({h.name: pairs[h.name][0] for h in self.composite}, self.composite)
        y_pred = composite_encode({h.name: pairs[h.name][1] for h in self.composite}, self.composite)
        keep = y_true != UNLABELLED
        return y_true[keep], y_pred[keep]

    def confusion(self, head: str) -> np.ndarray:
        """Confusion matrix (rows = truth) on labelled rows; `head` may be a decoded component or 'composite'."""
        pairs, specs = self._predictions()
        if head == "composite":
            labels = self._composite_labels(pairs)
            if labels is None:
                raise KeyError("composite: not every composite head is predicted")
            return confusion_counts(*labels, composite_size(self.composite))
        if head not in pairs:
            raise KeyError(f"no predictions for head '{head}'; available: {', '.join(pairs)}")
        return confusion_counts(*pairs[head], specs[head].num_classes)
