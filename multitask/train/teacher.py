"""The teacher of a distilled run: an ensemble's per-head probabilities on the student's images, as `predict`
computes them (each member's own model, crop and input size; the TTA views; the merge over views and members).

    teacher = teacher_for(cfg)          # train.distill.teachers loaded and checked against the student's heads
    teacher.record(cfg)                 # their sha256 into train.distill.checkpoints (config.yaml keeps them)
    targets = teacher.targets(cfg, frame, log=print)   # {"teacher/<head>": (N, C)}, NaN rows: no member may speak

In fold (the default): every member speaks for every image, also where it trained on it; its probabilities there
sit close to the labels. Out of fold (train.distill.out_of_fold: true): an image gets only the members that never
trained on it, read from each member's own config (its sources and fold, as it split them); for a k-fold teacher
that is the one fold that validated on it (one model, no ensemble), and an image every member trained on learns
from its labels alone. Images no member saw (another source, unlabelled photos) get the whole ensemble either way.
Either way the run says how many of its validation images a member trained on.

Each member's probabilities are stored per image (teacher_cache.py), computed once for every run that uses them.
"""
from __future__ import annotations

import copy
import dataclasses
import os
from typing import Callable

import numpy as np
import pandas as pd
import torch
from rich.console import Console

from ..config import Config, DataConfig, DistillConfig
from ..data.sources import rows_and_folds
from ..heads import HeadSpec, years_key
from ..infer.ensemble import Member, combine, load_ensemble, merge_over, predicted
from ..infer.forward import RunSettings, member_croppers, run_members
from ..infer.tta import resolve_merge, resolve_views
from ..model.distill import teacher_key
from ..utils.devices import pick_device, resolve_precision
from ..utils.errors import UserError
from .teacher_cache import DamagedCache, MemberCache, file_digest


def teacher_for(cfg: Config) -> "EnsembleTeacher | None":
    """The run's teacher (None when train.distill.teachers is empty), checked against its heads and recorded
    checkpoints; it runs on the run's train.device and train.amp, with its data.num_workers."""
    if not cfg.train.distill.teachers:
        return None
    teacher = EnsembleTeacher(cfg.train.distill, device=cfg.train.device, amp=cfg.train.amp,
                              workers=cfg.data.num_workers)
    teacher.check(cfg)
    teacher.record(cfg)
    return teacher


class EnsembleTeacher:
    def __init__(self, distill: DistillConfig, *, device: str = "auto", amp: str = "auto", batch_size: int = 64,
                 workers: int = 2):
        self.distill = distill
        self.views = resolve_views(distill.tta)
        self.merge = resolve_merge(distill.merge)
        device_ = pick_device(device, key="train.device")
        try:
            self.members = load_ensemble(list(distill.teachers), device=device_)
        except UserError as err:
            raise UserError(f"train.distill.teachers: {err}") from None
        self.digests = {str(m.path): file_digest(m.path) for m in self.members}
        self.settings = RunSettings(batch_size=batch_size, workers=workers,
                                    precision=resolve_precision(amp, device_))
        self.stats = {"computed": 0, "cached": 0}

    # ------------------------------------------------------------------------------------------ checks
    def check(self, cfg: Config) -> None:
        """Every trained head of the student in some member, with the same classes in every member that has it (a
        head is merged over the members that predict it, as predict merges specialists); one line naming the first
        that is not."""
        for head in cfg.trained_heads():
            having = [m for m in self.members if head.name in predicted(m)]
            if not having:
                theirs = sorted({n for m in self.members for n in predicted(m)})
                raise UserError(f"train.distill.teachers: no teacher checkpoint has a head '{head.name}' (they "
                                f"predict {', '.join(theirs)}); some member must predict every head the student "
                                f"trains")
            for m in having:
                theirs = next(h for h in m.expanded_heads() if h.name == head.name)
                if list(theirs.classes) != list(head.classes):
                    raise UserError(f"train.distill.teachers: {m.path} head '{head.name}' has classes "
                                    f"{list(theirs.classes)}, the student {list(head.classes)}; they must be the same")
                key, mine, other = next(((k, a, b) for k, a, b in class_meaning(head, theirs) if a != b),
                                        (None, None, None))
                if key is not None:
                    raise UserError(f"train.distill.teachers: {m.path} head '{head.name}' has {key} {_shown(other)}, "
                                    f"the student {_shown(mine)}: the same class names would mean other ages; train "
                                    f"the student with the teacher's heads.{head.name}.{key} or use another teacher")

    def record(self, cfg: Config) -> None:
        """train.distill.checkpoints = {checkpoint: sha256}; a run that recorded others (a resume, a copied config)
        must learn from the very same teacher."""
        recorded = cfg.train.distill.checkpoints
        if recorded and recorded != self.digests:
            changed = next((p for p in recorded if self.digests.get(p) != recorded[p]), None) or \
                next(p for p in self.digests if p not in recorded)
            raise UserError(f"train.distill.checkpoints: the teacher is not the one this run recorded ({changed} "
                            f"differs or is new); a resumed run must learn from the same checkpoints, or clear "
                            f"train.distill.checkpoints to start a new run")
        cfg.train.distill.checkpoints = dict(self.digests)

    # ------------------------------------------------------------------------------------------ targets
    def targets(self, cfg: Config, frame: pd.DataFrame, *, log: Callable[[str], None] = print) -> dict[str, np.ndarray]:
        """{teacher_key(head): (N, C) float32} over `frame`'s rows (+ a years head's year distribution when every
        member has one on the student's year grid); NaN rows where no member may speak for the image."""
        paths = [os.path.realpath(p) for p in frame["path"]]
        allowed, trained = self.allowed(paths)
        per_member = [self.member_probs(m, sorted({p for p, ok in zip(paths, allowed[:, k]) if ok}), cfg, log)
                      for k, m in enumerate(self.members)]
        heads = cfg.trained_heads()
        out = {teacher_key(h.name): np.full((len(paths), h.num_classes), np.nan, np.float32) for h in heads}
        years = [h for h in heads if h.target == "years" and self.has_years(h)]
        for h in years:
            out[teacher_key(years_key(h.name))] = np.full((len(paths), len(h.year_grid())), np.nan, np.float32)
        for pattern in np.unique(allowed, axis=0):
            if not pattern.any():
                continue
            rows = np.flatnonzero((allowed == pattern).all(1))
            chosen = [k for k in range(len(self.members)) if pattern[k]]
            merged = self.merged(chosen, [per_member[k] for k in chosen], [paths[r] for r in rows], heads, years)
            for key, values in merged.items():
                out[key][rows] = values
        log(self.summary(allowed))
        val = frame["fold"].to_numpy() == cfg.data.fold
        seen = val & trained.any(1) if trained is not None else val[:0]
        if seen.any():
            log(f"teacher: {int(seen.sum()):,} of the {int(val.sum()):,} validation images were training images of a "
                f"teacher member: val/* scores learn from that (optimistic); score the student on held-out photos")
        return out

    def allowed(self, paths: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
        """(N, M) whether member m may speak for image n (out of fold: it never trained on it), and whether it
        trained on it (None in fold when a member's data cannot be read: then nobody needs to know)."""
        try:
            trained = np.stack([np.isin(paths, list(trained_on(m))) for m in self.members], axis=1)
        except UserError:
            if self.distill.out_of_fold:
                raise
            trained = None
        if not self.distill.out_of_fold:
            return np.ones((len(paths), len(self.members)), dtype=bool), trained
        return ~trained, trained

    def member_probs(self, member: Member, paths: list[str], cfg: Config,
                     log: Callable[[str], None] = print) -> tuple[dict[str, np.ndarray], dict]:
        """({output: (len(paths), C)}, {path: row}) for `paths`, from the cache or computed (then stored)."""
        precision = self.settings.precision
        setting = f"{','.join(self.views)}|{self.distill.merge}|{precision.name}|{self.settings.device.type}"
        cache = MemberCache.open(cfg.data.cache_dir, member_digest=self.digests[str(member.path)], setting=setting,
                                 widths=output_widths(member), log=log)
        todo = cache.missing(paths)
        if todo:
            # quiet: the training already said how the face boxes of these photos came out
            croppers = member_croppers([member], todo, workers=max(1, self.settings.workers),
                                       cache_dir=cfg.data.cache_dir, console=Console(quiet=True))
            with torch.inference_mode():
                probs = run_members([member], todo, views=self.views, merge=self.merge, settings=self.settings,
                                    croppers=croppers)[0]
            try:
                cache.add(todo, probs)
            except DamagedCache as err:
                raise UserError(f"train.distill.teachers: {member.path} gives no probabilities on these images "
                                f"({err}); its weights are broken: retrain it or leave it out") from None
        self.stats["computed"] += len(todo)
        self.stats["cached"] += len(paths) - len(todo)
        return cache.get(paths) if paths else {}, {p: i for i, p in enumerate(paths)}

    def merged(self, chosen: list[int], probs: list, paths: list[str], heads: list[HeadSpec],
               years: list[HeadSpec]) -> dict[str, np.ndarray]:
        """The chosen members' probabilities on `paths`, merged per head as predict merges (over the chosen members
        that predict the head, weights renormalised); a head none of them predicts is left out (NaN: no teacher)."""
        members = [self.members[k] for k in chosen]
        total = sum(m.weight for m in members)
        members = [dataclasses.replace(m, weight=m.weight / total) for m in members]
        rows = [(arrays, np.array([index[p] for p in paths], dtype=np.int64)) for arrays, index in probs]
        picked = [{name: values[r] for name, values in arrays.items()} for arrays, r in rows]
        spoken = [h for h in heads if any(h.name in predicted(m) for m in members)]
        merged, _ = combine(members, picked, heads=spoken, composite=[], merge=self.merge, joint=False)
        out = {teacher_key(h.name): merged[h.name] for h in spoken}
        for h in years:
            have = [(p[years_key(h.name)], m.weight) for m, p in zip(members, picked) if years_key(h.name) in p]
            if have:
                out[teacher_key(years_key(h.name))] = merge_over(have, self.merge, of=len(members))
        return {k: v.astype(np.float32) for k, v in out.items()}

    def has_years(self, head: HeadSpec) -> bool:
        """Whether every member that predicts `head` has it as a years head on the same year grid (then its
        distribution distils)."""
        def grid(m: Member):
            spec = next((h for h in m.heads if h.name == head.name), None)
            return list(spec.year_grid()) if spec is not None and spec.target == "years" else None
        return all(grid(m) == list(head.year_grid()) for m in self.members if head.name in predicted(m))

    def summary(self, allowed: np.ndarray) -> str:
        n, computed, cached = len(allowed), self.stats["computed"], self.stats["cached"]
        counts = allowed.sum(1)
        where = f"teacher: {len(self.members)} model(s) x {len(self.views)} view(s) ({', '.join(self.views)}); "
        if self.distill.out_of_fold:
            where += (f"out of fold: {int((counts > 0).sum()):,} of {n:,} images have a member that never trained "
                      f"on them (mean {counts[counts > 0].mean() if (counts > 0).any() else 0:.1f} members each), "
                      f"{int((counts == 0).sum()):,} learn from their labels alone")
        else:
            where += ("in fold (train.distill.out_of_fold=false): every member speaks for every image, also where it "
                      "trained on it (probabilities close to the labels there: less to learn)")
        return where + f"; {computed:,} image-model pairs computed, {cached:,} from the cache"


def class_meaning(student: HeadSpec, teacher: HeadSpec) -> list[tuple[str, object, object]]:
    """(key, student's, teacher's) of what gives a head's classes their meaning beyond their names: the edges that
    bin ages into them (training and scoring), and, both being years heads, the years their distribution spans."""
    pairs = [("bins", student.bins, teacher.bins), ("eval_bins", student.eval_bins, teacher.eval_bins)]
    if student.target == "years" and teacher.target == "years":
        pairs.append(("years_range", list(student.years_range), list(teacher.years_range)))
    return [(key, None if a is None else list(a), None if b is None else list(b)) for key, a, b in pairs]


def _shown(values: list | None) -> str:
    return "none" if values is None else "[" + ", ".join(f"{v:g}" for v in values) + "]"


def output_widths(member: Member) -> dict[str, int]:
    """{output: classes} of what the member gives: each head's classes, a years head's year grid."""
    widths = {h.name: h.num_classes for h in member.heads}
    widths.update({years_key(h.name): len(h.year_grid()) for h in member.heads if h.target == "years"})
    return {name: widths[name] for name in member.model.outputs}


def trained_on(member: Member) -> set[str]:
    """The resolved paths of the images `member` trained on: its own sources, split by its own folds, all but its
    validation fold (a training-only source: all of it)."""
    cfg = copy.deepcopy(member.cfg)
    cfg.data.synthesize_if_missing = False   # reading what it saw writes nothing
    cfg.data.cache_dir = DataConfig().cache_dir
    try:
        _, frame = rows_and_folds(cfg)
    except UserError as err:
        raise UserError(f"train.distill.teachers: {member.path}: cannot tell which images it trained on ({err}); "
                        f"put its data back, or set train.distill.out_of_fold=false (in-fold teacher)") from None
    folds = frame["fold"].to_numpy()
    return {os.path.realpath(p) for p, fold in zip(frame["path"], folds) if fold != cfg.data.fold}
