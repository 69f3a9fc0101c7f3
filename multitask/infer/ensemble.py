"""The ensemble: its members (each checkpoint's own model, config and weight), the heads they share, their tuned
decisions, and how their probabilities merge.

    members = load_ensemble(["runs/a/1", "runs/kfold/1"], weights=[2, 1], device=device)   # k folds: one model
    heads, composite = ensemble_heads(members)
    offsets, used = ensemble_decisions(members, heads, "auto")     # each run's decisions.json, weight-averaged
    probs, joint = combine(members, per_member, heads=heads, composite=composite, merge=merge, joint=False)

A derived head (the single 18-class baseline) is expanded into its components' marginals, so it ensembles with a
mask/gender/age model. Probabilities are merged per head over the members that predict it (weighted), so
specialists ensemble too (a mask-only run with a gender/age run); a years head's expected age is the weighted mean
of each member's own estimate.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import Config, suggest
from ..data.crops import source_crop
from ..decisions.apply import average_offsets, describe
from ..decisions.file import for_heads, named
from ..decisions.file import read as read_decisions
from ..formats.onnx import OnnxModel
from ..heads import HeadSpec, expand_derived, expand_heads, expected_years, member_joint, years_key
from ..runs.run_dir import resolve_checkpoints
from ..utils.errors import UserError
from .backends import TorchModel, load_model


@dataclass
class Member:
    """One checkpoint of the ensemble: its own model (run by PyTorch or onnxruntime), config and (normalised) weight."""
    path: Path
    model: TorchModel | OnnxModel
    cfg: Config
    weight: float
    source: str | None = None   # the training source whose crop new photos get (predict --source); None: the first

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.cfg.data.image_size)

    @property
    def crop_cfg(self):
        """The crop the member applies to new photos: its first source's, or the one `source` names (none for
        checkpoints older than crops)."""
        return source_crop(self.cfg.data, self.source)

    @property
    def crop(self) -> str:
        return self.crop_cfg.crop

    @property
    def heads(self) -> list[HeadSpec]:
        return list(self.model.head_specs)

    def expanded_heads(self) -> list[HeadSpec]:
        return expand_heads(self.heads, self.cfg.heads)


def load_ensemble(items: list, *, weights=None, device=torch.device("cpu"), backend: str = "auto",
                  source: str | None = None) -> list[Member]:
    """One Member per checkpoint (run dirs and k-fold parents expanded), weights normalised to sum 1; with `source`,
    each member cuts new photos as that training source's were (every member must have it).

    --weights takes one value per checkpoint; one per --ckpt item also works (a k-fold parent's weight is split
    evenly over its folds, so the folds together count as one model).
    """
    groups = [resolve_checkpoints([item]) for item in items]
    paths = [p for group in groups for p in group]
    if not paths:
        raise UserError("--ckpt: no checkpoint given")
    if weights is None:
        raw = [1.0] * len(paths)
    elif len(weights) == len(paths):
        raw = [float(w) for w in weights]
    elif len(weights) == len(groups):
        raw = [float(w) / len(group) for w, group in zip(weights, groups) for _ in group]
    else:
        raise UserError(f"--weights: got {len(weights)} values for {len(paths)} checkpoints "
                        f"({', '.join(p.name for p in paths)}); give one weight per checkpoint")
    if any(not math.isfinite(w) or w < 0 for w in raw) or sum(raw) <= 0:
        raise UserError(f"--weights: need finite values >= 0 with a positive sum, got {list(weights)}")
    members = []
    for path, w in zip(paths, raw):
        model, cfg = load_model(path, backend=backend, device=device)
        known = list(cfg.data.resolved_sources())
        if source is not None and source not in known:
            raise UserError(f"--source {source}: {path} was trained on no source of that name"
                            f"{suggest(source, known)}; its sources: {', '.join(known)}")
        members.append(Member(path=path, model=model, cfg=cfg, weight=w / sum(raw), source=source))
    return members


def ensemble_heads(members: list[Member]) -> tuple[list[HeadSpec], list[HeadSpec]]:
    """(every head some member predicts, composite heads or []); UserError when two members give one head different
    classes, or when only members of weight 0 predict a head.

    Each head is merged over the members that predict it, so specialists ensemble: a mask-only run beside a
    gender/age run, or a mask specialist beside a full model (the mask head then averages both). Heads come in the
    order the members first name them. A derived head itself (class18) is kept only when every member has it. The
    composite is the members' longest (the first of equal length) whose heads are all predicted.
    """
    def has(m: Member, head: HeadSpec) -> bool:
        return any(x.name == head.name and x.classes == head.classes for x in m.expanded_heads())

    heads: list[HeadSpec] = []
    first: dict[str, tuple[HeadSpec, Path]] = {}
    for m in members:
        for h in m.expanded_heads():
            if h.name in first:
                known, where = first[h.name]
                if list(known.classes) != list(h.classes):
                    raise UserError(f"checkpoints disagree on head '{h.name}': {where} has classes "
                                    f"{list(known.classes)} but {m.path} has {list(h.classes)}; a head is merged "
                                    f"over the checkpoints that predict it, so they must give it the same classes")
                continue
            if h.derive and not all(has(x, h) for x in members):
                continue
            first[h.name] = (h, m.path)
            heads.append(h)
    names_of = [predicted(m) for m in members]
    for h in heads:
        having = [m for m, names in zip(members, names_of) if h.name in names]
        if sum(m.weight for m in having) <= 0:
            raise UserError(f"--weights: head '{h.name}' is predicted only by checkpoints of weight 0 "
                            f"({', '.join(str(m.path) for m in having)})")
    names = set(first)
    covered = [c for c in (m.cfg.composite_heads() for m in members) if c and all(h.name in names for h in c)]
    return heads, max(covered, key=len) if covered else []


def predicted(member: Member) -> set[str]:
    """The names of the heads `member` gives probabilities for (derived heads expanded into their components)."""
    return {h.name for h in member.expanded_heads()}


def check_joint(members: list[Member], composite: list[HeadSpec]) -> None:
    """--joint merges each member's joint distribution over the composite, so every member must predict all of it."""
    if not composite:
        raise UserError(f"--joint: the checkpoints do not predict every composite head "
                        f"({', '.join(members[0].cfg.composite)}); drop --joint")
    partial = [m for m in members if not {h.name for h in composite} <= predicted(m)]
    if partial:
        raise UserError(f"--joint: {partial[0].path} does not predict every composite head "
                        f"({', '.join(h.name for h in composite)}): the joint distribution is merged over models "
                        f"that each predict all of them; drop --joint or that checkpoint")


def head_configs(members: list[Member]) -> dict[str, HeadSpec]:
    """{head: its config} over the ensemble, each from the first member that has it: how labelled inputs are read."""
    out: dict[str, HeadSpec] = {}
    for m in members:
        for name, spec in m.cfg.heads.items():
            out.setdefault(name, spec)
    return out


def ensemble_decisions(members: list[Member], heads: list[HeadSpec], choice="auto") -> tuple[dict, dict]:
    """(offsets {head: (C,)}, what was used) for --decisions auto | off | PATH.

    auto: each member's own decisions (decisions.json of its run dir, or of its k-fold run dir for a fold's
    checkpoint; an export's manifest), averaged over the members with their ensemble weights; a member without any
    (or whose fit was not applied) counts as zero offsets, its plain argmax. The folds of one k-fold run share one
    file, so they get exactly its offsets. off: plain argmax. PATH: that file for the whole ensemble."""
    choice = str(choice or "auto")
    if choice == "off":
        return {}, {"mode": "off", "sources": [], "offsets": {}, "line": "decisions: off (plain argmax)"}
    if choice != "auto":
        doc = read_decisions(choice)
        offsets, sources = for_heads(doc, heads, where=f"--decisions {choice}"), [doc["path"]]
    else:
        parts, sources = [], []
        for m in members:
            doc = m.model.decisions
            where = str(doc.get("path") or m.path) if doc else str(m.path)
            parts.append((for_heads(doc, m.expanded_heads(), where=where), m.weight, predicted(m)))
            if doc and where not in sources:
                sources.append(where)
        offsets = average_offsets(parts, heads)
    where = ", ".join(sources) or "no decisions.json next to the checkpoints"
    line = f"decisions: {describe(offsets, heads)} ({where})" if offsets else f"decisions: none, plain argmax ({where})"
    return offsets, {"mode": "auto" if choice == "auto" else "file", "sources": sources,
                     "offsets": named(offsets, [h for h in heads if h.name in offsets]), "line": line}


def combine(members: list[Member], per_member: list[dict[str, np.ndarray]], *, heads: list[HeadSpec],
            composite: list[HeadSpec], merge, joint: bool) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Merge members per head (weighted; a head over the members that predict it, their weights renormalised):
    (probabilities {head: (N, C)}, joint (N, prod) or None; the joint needs every member to predict the composite)."""
    expanded = [expand_derived(p, m.heads, m.cfg.heads)[1] for m, p in zip(members, per_member)]
    probs = {h.name: merge_over([(e[h.name], m.weight) for m, e in zip(members, expanded) if h.name in e], merge,
                                of=len(members))
             for h in heads}
    joint_probs = None
    if joint:
        joint_probs = merge_over([(member_joint(e, m.heads, composite), m.weight) for m, e in zip(members, expanded)],
                                 merge, of=len(members))
    return probs, joint_probs


def merge_over(pairs: list[tuple[np.ndarray, float]], merge, *, of: int) -> np.ndarray:
    """Merge (array, weight) pairs from some of the `of` members of an ensemble whose weights sum to 1: the weights
    are renormalised over the pairs when some members are missing (a head only some of them predict)."""
    weights = torch.tensor([w for _, w in pairs], dtype=torch.float64)
    if len(pairs) < of:
        weights = weights / weights.sum()
    return merge(torch.from_numpy(np.stack([a for a, _ in pairs])).double(), weights).numpy()


def combine_years(members: list[Member], per_member: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """{years head: (N,) expected age}: each member's own (from its year distribution merged over the views, over its
    own years_range), then the weighted mean over the members that predict years (their weights renormalised)."""
    sums: dict[str, np.ndarray] = {}
    weights: dict[str, float] = {}
    for m, probs in zip(members, per_member):
        for head in m.heads:
            if head.target == "years" and years_key(head.name) in probs:
                sums[head.name] = sums.get(head.name, 0.0) + m.weight * expected_years(probs[years_key(head.name)],
                                                                                      head)
                weights[head.name] = weights.get(head.name, 0.0) + m.weight
    return {name: total / weights[name] for name, total in sums.items() if weights[name] > 0}
