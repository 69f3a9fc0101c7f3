"""Ensemble + TTA inference: checkpoints -> per-head probabilities -> decided labels -> submission.csv.

    multitask predict --ckpt runs/quickstart/1 --data data/synthetic --out out/
    multitask predict --ckpt runs/effb0/2 runs/r18_single18/1/best.pt --weights 2 1 --data data/mask/eval \\
        --out out/ --tta identity,hflip,fivecrop --merge mean --gt data/mask/eval/gt.csv
    multitask predict --ckpt runs/kfold/1 --data photos/ --out out/        # a k-fold parent: every fold's best.pt
    multitask predict --ckpt runs/a/1/best.onnx deploy/b runs/c/1 --data photos/ --out out/   # ONNX, safetensors, .pt

    result = run_predict(PredictOptions(ckpts=["runs/quickstart/1"], data="data/synthetic", out="out/"))

A pipeline of steps, each a function of what the last one made: `load` (the ensemble, its heads and decisions, the
inputs and their truth: everything that can fail before a forward pass), `forward` (forward.py: every member under
every TTA view), `merge` (over views, then members, per head), `decide` (argmax of log p + each head's tuned offsets;
decisions/apply.py), `write` (submission.csv, predictions.csv) and `score` (with --gt, or a labelled manifest as --data:
every macro F1 with its 95% bootstrap interval, resampling people when the truth names them, from the table in
memory; scores.json).

Each checkpoint rebuilds its own model (backbone, heads, input size, normalisation, data.crop), so different
backbones, sizes and crops ensemble in one call. The composite label is the per-head decisions combined by the
composite encoding, or with --joint the argmax of the ensemble's joint distribution over the 18 classes (a model's
own 18-class head where it has one, else the product of its heads). Tuned decisions: each run's decisions.json
(--decisions auto), none (off: the plain argmax) or one file for the whole ensemble (--decisions PATH). The
probabilities written stay the model's; pred/... and the submission move.

Writes OUT/submission.csv (ImageID, ans in info.csv order; image_id, ans for other inputs), OUT/predictions.csv
(the shared predictions table, metrics/table.py), with truth OUT/scores.json, and OUT/predict.json (what made them),
as one transaction (outputs.py): staged, then moved into place, the previous run's outputs of the same kinds removed;
a failed predict leaves OUT as it was, and an OUT that is or holds an input is refused before any work.
"""
from __future__ import annotations

import io
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from .. import __version__
from ..data.ground_truth import GroundTruth, read_gt
from ..data.inputs import Inputs, manifest_truth, read_inputs
from ..decisions.apply import decide, decide_joint
from ..heads import HeadSpec, composite_encode
from ..metrics.intervals import pairs_of, score_intervals
from ..metrics.stats import head_scores, macro_f1
from ..metrics.table import build_table
from ..runs.run_dir import PREDICTIONS, SCORES, SUBMISSION
from ..utils.devices import pick_device, resolve_precision
from ..utils.errors import UserError
from ..utils.io import write_csv, write_json
from .backends import glue_threads
from .ensemble import (
    Member,
    check_joint,
    combine,
    combine_years,
    ensemble_decisions,
    ensemble_heads,
    head_configs,
    load_ensemble,
    predicted,
)
from .forward import RunSettings, member_croppers, run_members
from .outputs import check_out, commit, make_out_dir, staged
from .tta import resolve_merge, resolve_views, view_count


@dataclass
class PredictOptions:
    """What `multitask predict` takes (its flags, one field each)."""
    ckpts: Sequence
    data: str | Path
    out: str | Path
    tta: Sequence[str] = ("identity",)
    merge: str = "mean"
    weights: Sequence[float] | None = None
    joint: bool = False
    gt: str | Path | None = None
    decisions: str = "auto"
    batch_size: int = 64
    workers: int = 2
    device: str = "auto"
    amp: str = "auto"
    backend: str = "auto"
    cache_dir: str | Path | None = None   # the face-box store (face-crop members); None: data.cache_dir's default
    source: str | None = None             # the training source whose crop the photos get; None: each one's first


@dataclass
class Plan:
    """Everything known before the first forward pass: the ensemble, what it predicts and decides, on what."""
    members: list[Member]
    heads: list[HeadSpec]
    composite: list[HeadSpec]
    offsets: dict[str, np.ndarray]
    used: dict                      # the decisions applied, as scores.json records them (+ "line" to print)
    inputs: Inputs
    truth: GroundTruth | None
    views: list[str]
    settings: RunSettings
    options: PredictOptions

    @property
    def ids(self) -> list:
        return self.inputs.frame["image_id"].tolist()

    @property
    def paths(self) -> list[str]:
        return self.inputs.frame["path"].tolist()


@dataclass
class Merged:
    """The ensemble's answer: probabilities per head, the joint distribution (--joint), expected ages, decisions."""
    probs: dict[str, np.ndarray]
    joint: np.ndarray | None
    years: dict[str, np.ndarray]
    labels: dict[str, np.ndarray] = field(default_factory=dict)   # decided class per head
    pred: np.ndarray | None = None                                # the composite label, None without a composite


# --------------------------------------------------------------------------------------------------- the pipeline
def run_predict(options: PredictOptions, *, console: Console | None = None) -> dict:
    """Predict, write OUT/submission.csv + predictions.csv (+ scores.json with truth) + predict.json, all or
    nothing; returns scores and throughput."""
    console = console or Console()
    plan = load(options)
    out = make_out_dir(options.out)
    announce(plan, console)
    start = time.perf_counter()
    per_member = forward(plan, console)
    seconds = time.perf_counter() - start
    merged = decide_merged(plan, merge(plan, per_member))
    result = throughput(plan, seconds)
    with staged(out) as stage:
        table = write_outputs(stage, plan, merged)
        if plan.truth is not None:
            result.update(score_outputs(stage, plan, merged, table, console))
        commit(stage, out, record(plan))
    console.print(f"done: {len(plan.ids)} images in {seconds:.2f}s: {result['images_per_s']:.1f} images/s, "
                  f"{result['forward_images_per_s']:.1f} images/s over all models and views -> {out}", markup=False)
    if merged.pred is None:
        console.print("no submission.csv: the checkpoints do not predict every composite head")
    return result


def load(options: PredictOptions) -> Plan:
    """The ensemble and its inputs, checked: a bad option, checkpoint, --data or --gt fails here, before any work."""
    check_out(options.out, inputs_of(options))
    views = resolve_views(options.tta)
    resolve_merge(options.merge)
    if options.batch_size < 1 or options.workers < 0:
        raise UserError(f"--batch-size must be >= 1 and --workers >= 0, got {options.batch_size} and "
                        f"{options.workers}")
    device = pick_device(options.device)
    members = load_ensemble(list(options.ckpts), weights=options.weights, device=device, backend=options.backend,
                            source=options.source)
    heads, composite = ensemble_heads(members)
    if options.joint:
        check_joint(members, composite)
    offsets, used = ensemble_decisions(members, heads, options.decisions)
    inputs = read_inputs(options.data, head_configs(members))
    ids = inputs.frame["image_id"].tolist()
    # a labelled manifest is its own truth
    truth = read_gt(options.gt, ids, heads, composite) if options.gt else manifest_truth(inputs, heads, composite)
    settings = RunSettings(batch_size=options.batch_size, workers=options.workers,
                           precision=resolve_precision(options.amp, device))
    return Plan(members=members, heads=heads, composite=composite, offsets=offsets, used=used, inputs=inputs,
                truth=truth, views=views, settings=settings, options=options)


def inputs_of(options: PredictOptions) -> dict[str, list]:
    """Every file or folder predict reads, by flag: none may lie in --out (outputs.check_out). A run dir's
    checkpoints lie inside the --ckpt given, so the items as given cover them."""
    return {"--data": [options.data], "--ckpt": list(options.ckpts),
            "--gt": [options.gt] if options.gt else [],
            "--decisions": [options.decisions] if options.decisions not in ("auto", "off") else []}


def record(plan: Plan) -> dict:
    """predict.json: what made the outputs beside it (the rest of the options are in scores.json with truth)."""
    o = plan.options
    return {"made": datetime.now(timezone.utc).isoformat(timespec="seconds"), "multitask": __version__,
            "checkpoints": {str(m.path): m.weight for m in plan.members}, "data": str(o.data),
            "gt": str(plan.truth.path) if plan.truth is not None else None, "images": len(plan.ids),
            "tta": plan.views, "merge": o.merge, "joint": o.joint, "source": o.source,
            "decisions": {k: v for k, v in plan.used.items() if k != "line"}}


def announce(plan: Plan, console: Console) -> None:
    """The members, the decisions and what is about to run, one line each."""
    for m in plan.members:
        crop = f" crop {m.crop}" if m.crop != "none" else ""
        crop += f" (source {m.source})" if m.source else ""
        console.print(f"  {m.path}  {m.cfg.model.backbone} {m.size[0]}x{m.size[1]}{crop}  heads "
                      f"{', '.join(h.name for h in m.heads)}  weight {m.weight:.3g}  {m.model.kind}", markup=False)
    merged_over = {h.name: sum(h.name in predicted(m) for m in plan.members) for h in plan.heads}
    if any(n < len(plan.members) for n in merged_over.values()):   # specialists: say which head comes from whom
        console.print("heads merged over the models that predict them: " + ", ".join(
            f"{name} {n} of {len(plan.members)}" for name, n in merged_over.items()), markup=False)
    precision = plan.settings.precision
    amp = str(precision.dtype).replace("torch.", "") if precision.enabled else "off"
    if not any(m.model.kind == "torch" for m in plan.members):
        amp = "n/a (onnxruntime)"
    console.print(plan.used["line"], markup=False, highlight=False)
    console.print(f"predicting {len(plan.ids)} images with {len(plan.members)} model(s) x {view_count(plan.views)} "
                  f"view(s) ({', '.join(plan.views)}), merge {plan.options.merge}, {plan.settings.device}, amp {amp}")


def forward(plan: Plan, console: Console) -> list[dict[str, np.ndarray]]:
    """Each member's probabilities (merged over the TTA views), cut by its own crop."""
    croppers = member_croppers(plan.members, plan.paths, workers=max(1, plan.settings.workers), console=console,
                               cache_dir=plan.options.cache_dir)
    with glue_threads([m.model for m in plan.members]):
        return run_members(plan.members, plan.paths, views=plan.views, merge=resolve_merge(plan.options.merge),
                           settings=plan.settings, croppers=croppers, console=console)


def merge(plan: Plan, per_member: list[dict[str, np.ndarray]]) -> Merged:
    probs, joint = combine(plan.members, per_member, heads=plan.heads, composite=plan.composite,
                           merge=resolve_merge(plan.options.merge), joint=plan.options.joint)
    return Merged(probs=probs, joint=joint, years=combine_years(plan.members, per_member))


def decide_merged(plan: Plan, merged: Merged) -> Merged:
    """Per-head decisions (argmax of log p + offsets; the plain argmax without), and the composite label from them
    (or, with --joint, from the joint distribution)."""
    merged.labels = decide(merged.probs, plan.heads, plan.offsets)
    if plan.options.joint:
        merged.pred = decide_joint(merged.joint, plan.composite, plan.offsets)
    elif plan.composite:
        merged.pred = composite_encode({h.name: merged.labels[h.name] for h in plan.composite}, plan.composite)
    return merged


def write_outputs(out: Path, plan: Plan, merged: Merged) -> pd.DataFrame:
    """submission.csv (when there is a composite) and the predictions table, with the truth and the inputs'
    metadata, into `out` (the staging folder: commit removes an earlier run's submission.csv); returns the table."""
    if merged.pred is not None:
        write_csv(pd.DataFrame({plan.inputs.id_column: plan.ids, "ans": merged.pred}), out / SUBMISSION)
    meta = plan.inputs.frame.drop(columns=["image_id", "path"])
    targets = None
    if plan.truth is not None:
        extra = plan.truth.meta.drop(columns=[c for c in plan.truth.meta.columns if c in meta.columns])
        targets, meta = plan.truth.targets, pd.concat([meta, extra], axis=1)
    table = build_table(ids=plan.ids, paths=plan.paths, heads=plan.heads, probs=merged.probs, targets=targets,
                        composite=plan.composite, composite_pred=merged.pred, preds=merged.labels, meta=meta,
                        years=merged.years)
    write_csv(table, out / PREDICTIONS)
    return table


def throughput(plan: Plan, seconds: float) -> dict:
    views = view_count(plan.views)
    forward_images = len(plan.ids) * len(plan.members) * views
    return {"images": len(plan.ids), "models": len(plan.members), "views": views, "seconds": round(seconds, 3),
            "images_per_s": len(plan.ids) / seconds, "forward_images_per_s": forward_images / seconds,
            "decisions": {k: v for k, v in plan.used.items() if k != "line"}}


# --------------------------------------------------------------------------------------------------- scoring
def score_outputs(out: Path, plan: Plan, merged: Merged, table: pd.DataFrame, console: Console) -> dict:
    """The scores and their intervals, printed and written to scores.json."""
    truth = plan.truth
    scores = score(truth, merged.labels, plan.heads, merged.pred)
    targets = {h.name: truth.targets[h.name] for h in plan.heads if h.name in truth.targets}
    scores.update(score_intervals(table, pairs_of(table, plan.heads, merged.probs, targets)).as_json())
    print_scores(scores, plan.heads, console)
    if truth.note():
        console.print(f"note: {truth.note()}", markup=False)
    o = plan.options
    write_json(out / SCORES, {**scores, "unlabelled": truth.missing, "joint": o.joint, "tta": plan.views,
                              "merge": o.merge, "checkpoints": {str(m.path): m.weight for m in plan.members},
                              "gt": str(truth.path), "decisions": {k: v for k, v in plan.used.items() if k != "line"}})
    return scores


def score(truth: GroundTruth, labels: dict[str, np.ndarray], heads: list[HeadSpec], pred: np.ndarray | None) -> dict:
    """composite/f1 (the competition metric: macro F1 over the classes present), composite/acc, per head acc and
    macro F1 of the decided labels; rows whose truth is unknown (-1) are left out."""
    out: dict[str, float] = {}
    if truth.composite is not None and pred is not None:
        keep = truth.composite >= 0
        y_true, y_pred = truth.composite[keep], np.asarray(pred)[keep]
        if len(y_true):
            classes = int(max(y_true.max(), y_pred.max())) + 1
            out["composite/f1"] = macro_f1(y_true, y_pred, classes, present_only=True)
            out["composite/acc"] = float(np.mean(y_true == y_pred))
            out["composite/n"] = int(len(y_true))
    for head in heads:
        if head.name in truth.targets:
            s = head_scores(truth.targets[head.name], labels[head.name], head.num_classes)
            if s["n"]:
                out.update({f"{head.name}/acc": s["acc"], f"{head.name}/f1": s["f1"], f"{head.name}/n": s["n"]})
    return out


def print_scores(scores: dict, heads: list[HeadSpec], console: Console) -> None:
    ci = scores.get("intervals")
    title = "scores" if not ci else (f"scores (95% intervals: {ci['draws']} bootstrap draws over {ci['groups']} "
                                     f"{ci['resampled']})")
    table = Table(title=title)
    for column in ("", "macro F1", "95% interval", "accuracy", "n"):
        table.add_column(column, justify="right" if column else "left")
    for name in ["composite", *(h.name for h in heads)]:
        if f"{name}/acc" in scores:
            lo_hi = scores.get(f"{name}/f1_ci95")
            table.add_row(name, f"{scores[f'{name}/f1']:.4f}", f"{lo_hi[0]:.4f}–{lo_hi[1]:.4f}" if lo_hi else "",
                          f"{scores[f'{name}/acc']:.4f}", str(scores[f"{name}/n"]))
    console.print(table)


def score_models(models: dict[str, bytes], *, data, gt) -> dict[str, dict]:
    """ONNX models (bytes by name) each through this pipeline alone (identity view, CPU), scored against `gt`: what
    `multitask export --quantize int8 --gt` compares fp32 with int8 by."""
    quiet = Console(file=io.StringIO())
    scores = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, model_bytes in models.items():
            path = Path(tmp) / f"{name}.onnx"
            path.write_bytes(model_bytes)   # a scratch copy for onnxruntime, gone with the folder
            scores[name] = run_predict(PredictOptions(ckpts=[path], data=data, out=Path(tmp) / name, gt=gt,
                                                      workers=0, device="cpu"), console=quiet)
    return scores
