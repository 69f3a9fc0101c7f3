"""Ensemble + TTA inference: checkpoints -> per-head probabilities -> composite label -> submission.csv.

    multitask predict --ckpt runs/quickstart/1 --data data/synthetic --out out/
    multitask predict --ckpt runs/effb0/2 runs/r18_single18/1/best.pt --weights 2 1 --data data/mask/eval \\
        --out out/ --tta identity,hflip,fivecrop --merge mean --gt data/mask/eval/gt.csv
    multitask predict --ckpt runs/kfold/1 --data photos/ --out out/        # a k-fold parent: every fold's best.pt
    multitask predict --ckpt runs/a/1/best.onnx deploy/b runs/c/1 --data photos/ --out out/   # ONNX, safetensors, .pt

Each checkpoint rebuilds its own model (backbone, heads, input size, normalisation, data.crop), so different
backbones, sizes and crops ensemble in one call. Every image is decoded once and cut (data.crop: the checkpoint's
own crop; face boxes detected once per image set, stored by content like training's) and resized once per distinct
input (size, crop); all models of that input then see the same batch under every TTA view. Probabilities are
merged over views per model, then over models (weighted), per head. A derived head (the single 18-class baseline)
is expanded into its components' marginals, so it ensembles with a mask/gender/age model. The composite label is
the per-head decisions combined by the composite encoding, or with --joint the argmax of the ensemble's joint
distribution over the 18 classes (a model's own 18-class head where it has one, else the product of its heads).

Tuned decisions (decisions.py): with a run's decisions.json (fitted on its OOF by `train` or `tune-decisions`) each
head decides by argmax of log p + that head's class offsets; --decisions off is the plain argmax, --decisions PATH
one file for the whole ensemble. The probabilities written stay the model's; pred/... and the submission move.

A member is a checkpoint, a safetensors export folder or an .onnx export (backends.py): .onnx files run on
onnxruntime, the rest on PyTorch, or all on onnxruntime with --backend onnxruntime (exported in memory).

Writes OUT/submission.csv (ImageID, ans in info.csv order; image_id, ans for other inputs), OUT/predictions.csv
(the shared predictions table) and, with --gt (or a manifest --data with label columns, scored the same way),
OUT/scores.json: every macro F1 with its 95% bootstrap interval (resampling people when the gt has a `group`
column, else images), and the decisions applied.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sklearn.metrics import f1_score
from torch.utils.data import DataLoader, Dataset

from ..analysis.compare import score_intervals
from ..analysis.tune import average_offsets, decide, decide_joint, describe, for_heads, named
from ..analysis.tune import read as read_decisions
from ..config import Config
from ..data.faces import Cropper, cropper_for, detect_faces, plan_faces, progress_bar
from ..data.ground_truth import GroundTruth, read_gt, truth_from_rows
from ..data.images import read_image, resize
from ..heads import HeadSpec, composite_encode, expected_years, joint_probabilities, years_key
from ..metrics.accumulator import scores as head_scores
from ..metrics.table import build_table, expand_derived, write_table
from ..runs.checkpoint import resolve_checkpoints
from ..utils.devices import pick_device
from ..utils.errors import UserError
from ..utils.io import atomic_write
from ..utils.precision import resolve_precision
from .backends import OnnxModel, TorchModel, glue_threads, load_model
from .tta import VIEWS, resolve_merge, resolve_views, view_count

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


@dataclass
class Member:
    """One checkpoint of the ensemble: its own model (run by PyTorch or onnxruntime), config and (normalised) weight."""
    path: Path
    model: TorchModel | OnnxModel
    cfg: Config
    weight: float

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.cfg.data.image_size)

    @property
    def crop(self) -> str:
        return self.cfg.data.crop   # "none" for checkpoints older than crops: from_dict fills the default

    @property
    def heads(self) -> list[HeadSpec]:
        return list(self.model.head_specs)

    def expanded_heads(self) -> list[HeadSpec]:
        # expand_derived works on probabilities; uniform placeholders give its head list without a forward pass
        dummy = {h.name: np.full((1, h.num_classes), 1.0 / h.num_classes) for h in self.heads}
        return expand_derived(dummy, self.heads, self.cfg.heads)[0]


@dataclass
class Inputs:
    frame: pd.DataFrame   # image_id, path, then metadata columns
    id_column: str        # submission's id column: ImageID for the competition layout, else image_id
    manifest: Path | None = None   # the manifest CSV the images came from (its head columns are truth)


# --------------------------------------------------------------------------------------------------- entry point
def run_predict(*, ckpts, data, out, tta=("identity",), merge="mean", weights=None, joint=False, gt=None,
                decisions="auto", batch_size=64, workers=2, device="auto", amp="auto", backend="auto",
                console: Console | None = None) -> dict:
    """Predict, write OUT/submission.csv + predictions.csv (+ scores.json with gt); returns scores and throughput."""
    console = console or Console()
    views, merge_fn = resolve_views(tta), resolve_merge(merge)
    if batch_size < 1 or workers < 0:
        raise UserError(f"--batch-size must be >= 1 and --workers >= 0, got {batch_size} and {workers}")
    device = pick_device(device)
    precision = resolve_precision(amp, device)
    members = load_ensemble(list(ckpts), weights=weights, device=device, backend=backend)
    heads, composite = ensemble_heads(members)
    if joint and not composite:
        raise UserError(f"--joint: the checkpoints do not predict every composite head "
                        f"({', '.join(members[0].cfg.composite)}); drop --joint")
    offsets, used = ensemble_decisions(members, heads, decisions)
    inputs = read_inputs(data, members[0].cfg.heads)
    ids, paths = inputs.frame["image_id"].tolist(), inputs.frame["path"].tolist()
    # before inference: a bad gt fails in a second; a labelled manifest is its own gt
    truth = read_gt(gt, ids, heads, composite) if gt else manifest_truth(inputs, heads, composite)

    out = make_out_dir(out)
    for m in members:
        crop = f" crop {m.crop}" if m.crop != "none" else ""
        console.print(f"  {m.path}  {m.cfg.model.backbone} {m.size[0]}x{m.size[1]}{crop}  heads "
                      f"{', '.join(h.name for h in m.heads)}  weight {m.weight:.3g}  {m.model.kind}", markup=False)
    amp_name = str(precision.dtype).replace("torch.", "") if precision.enabled else "off"
    if not any(m.model.kind == "torch" for m in members):
        amp_name = "n/a (onnxruntime)"
    console.print(used["line"], markup=False, highlight=False)
    console.print(f"predicting {len(ids)} images with {len(members)} model(s) x {view_count(views)} view(s) "
                  f"({', '.join(views)}), merge {merge}, {device}, amp {amp_name}")
    croppers = member_croppers(members, paths, workers=max(1, workers), console=console)
    start = time.perf_counter()
    with glue_threads([m.model for m in members]):
        per_member = infer(members, paths, views=views, merge=merge_fn, batch_size=batch_size, workers=workers,
                           device=device, precision=precision, console=console, croppers=croppers)
    seconds = time.perf_counter() - start
    probs, joint_probs = combine(members, per_member, heads=heads, composite=composite, merge=merge_fn, joint=joint)
    labels = decide(probs, heads, offsets)   # per-head decisions: argmax of log p + offsets (plain argmax without)
    pred = (decide_joint(joint_probs, composite, offsets) if joint else
            composite_encode({h.name: labels[h.name] for h in composite}, composite) if composite else None)
    years = combine_years(members, per_member)

    if pred is not None:
        write_table(pd.DataFrame({inputs.id_column: ids, "ans": pred}), out / "submission.csv")
    else:  # a submission left by an earlier run in this folder would look like this run's
        (out / "submission.csv").unlink(missing_ok=True)
    meta = inputs.frame.drop(columns=["image_id", "path"])
    targets = None
    if truth is not None:
        extra = truth.meta.drop(columns=[c for c in truth.meta.columns if c in meta.columns])
        targets, meta = truth.targets, pd.concat([meta, extra], axis=1)
    table = build_table(ids=ids, paths=paths, heads=heads, probs=probs, targets=targets, composite=composite,
                        composite_pred=pred, preds=labels, meta=meta, years=years)
    write_table(table, out / "predictions.csv")

    forward = len(ids) * len(members) * view_count(views)
    result = {"images": len(ids), "models": len(members), "views": view_count(views), "seconds": round(seconds, 3),
              "images_per_s": len(ids) / seconds, "forward_images_per_s": forward / seconds,
              "decisions": {k: v for k, v in used.items() if k != "line"}}
    console.print(f"done: {len(ids)} images in {seconds:.2f}s: {result['images_per_s']:.1f} images/s, "
                  f"{result['forward_images_per_s']:.1f} images/s over all models and views -> {out}", markup=False)
    if pred is None:
        console.print("no submission.csv: the checkpoints do not predict every composite head")
    if truth is not None:
        scores = score(truth, labels, heads, pred)
        intervals = score_intervals(out / "predictions.csv")   # resampling people when the gt names them
        scores.update(intervals.as_json())
        print_scores(scores, heads, console)
        if truth.note():
            console.print(f"note: {truth.note()}", markup=False)
        with atomic_write(out / "scores.json") as f:
            json.dump({**scores, "unlabelled": truth.missing, "joint": joint, "tta": views, "merge": merge,
                       "checkpoints": {str(m.path): m.weight for m in members}, "gt": str(truth.path),
                       "decisions": result["decisions"]}, f, indent=2)
        result.update(scores)
    return result


def make_out_dir(out) -> Path:
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"--out {out}: exists and is not a folder; give a folder for the outputs") from None
    except OSError as err:
        raise UserError(f"--out {out}: cannot create the folder ({err.strerror})") from None
    return out


# --------------------------------------------------------------------------------------------------- ensemble
def load_ensemble(items: list, *, weights=None, device=torch.device("cpu"), backend: str = "auto") -> list[Member]:
    """One Member per checkpoint (run dirs and k-fold parents expanded), weights normalised to sum 1.

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
        members.append(Member(path=path, model=model, cfg=cfg, weight=w / sum(raw)))
    return members


def ensemble_heads(members: list[Member]) -> tuple[list[HeadSpec], list[HeadSpec]]:
    """(heads every member predicts, composite heads or []); UserError when members predict different heads.

    Members must agree on their plain heads (after derived heads are expanded); a derived head itself (class18) is
    kept only when every member has it.
    """
    def plain(m: Member) -> dict[str, list[str]]:
        return {h.name: list(h.classes) for h in m.expanded_heads() if not h.derive}

    first = plain(members[0])
    for m in members[1:]:
        if plain(m) != first:
            describe = lambda heads: "; ".join(f"{n} {c}" for n, c in heads.items())  # noqa: E731
            raise UserError(f"checkpoints predict different heads: {members[0].path} has {describe(first)} but "
                            f"{m.path} has {describe(plain(m))}; ensemble only checkpoints with the same heads")
    shared = [h for h in members[0].expanded_heads()
              if not h.derive or all(any(x.name == h.name and x.classes == h.classes for x in m.expanded_heads())
                                     for m in members)]
    names = {h.name for h in shared}
    composite = members[0].cfg.composite_heads()
    return shared, composite if composite and all(h.name in names for h in composite) else []


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
            parts.append((for_heads(doc, m.expanded_heads(), where=where), m.weight))
            if doc and where not in sources:
                sources.append(where)
        offsets = average_offsets(parts, heads)
    where = ", ".join(sources) or "no decisions.json next to the checkpoints"
    line = f"decisions: {describe(offsets, heads)} ({where})" if offsets else f"decisions: none, plain argmax ({where})"
    return offsets, {"mode": "auto" if choice == "auto" else "file", "sources": sources,
                     "offsets": named(offsets, [h for h in heads if h.name in offsets]), "line": line}


def member_joint(probs: dict[str, np.ndarray], heads: list[HeadSpec], composite: list[HeadSpec]) -> np.ndarray:
    """A member's distribution over composite classes: its own derived head when it has one (it learnt the
    correlations), else the product of its independent heads."""
    names = [h.name for h in composite]
    own = next((h for h in heads if h.derive == names), None)
    return probs[own.name] if own is not None else joint_probabilities(probs, composite)


def combine(members: list[Member], per_member: list[dict[str, np.ndarray]], *, heads: list[HeadSpec],
            composite: list[HeadSpec], merge, joint: bool) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Merge members per head (weighted): (probabilities {head: (N, C)}, joint (N, prod) or None)."""
    weights = torch.tensor([m.weight for m in members], dtype=torch.float64)
    expanded = [expand_derived(p, m.heads, m.cfg.heads)[1] for m, p in zip(members, per_member)]

    def merged(arrays: list[np.ndarray]) -> np.ndarray:
        return merge(torch.from_numpy(np.stack(arrays)).double(), weights).numpy()

    probs = {h.name: merged([e[h.name] for e in expanded]) for h in heads}
    joint_probs = None
    if joint:
        joint_probs = merged([member_joint(e, m.heads, composite) for m, e in zip(members, expanded)])
    return probs, joint_probs


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


# --------------------------------------------------------------------------------------------------- inference
def member_croppers(members: list[Member], paths: list[str], *, workers: int = 2,
                    console: Console | None = None) -> list[Cropper | None]:
    """Each member's training crop over these images; face boxes are detected once for all face-crop members."""
    face = [m for m in members if m.crop == "face"]
    plan = None
    if face:
        with progress_bar("face boxes") as progress:
            plan = plan_faces(detect_faces(paths, cache_dir=face[0].cfg.data.cache_dir, workers=workers,
                                           progress=progress))
        (console or Console()).print(plan.summary(), markup=False)
    return [cropper_for(m.cfg.data, plan) for m in members]


Input = tuple[int, int, "Cropper | None"]   # what a model is fed: height, width and the crop (None: whole photo)


class DecodedImages(Dataset):
    """Each image decoded once and cut and resized to every input the ensemble needs: (uint8 3xHxW per input, error).

    Exactly what training fed each model (data/faces.py read_pixels): the whole photo decoded at the smallest JPEG
    scale that covers every uncropped size, a cropped one decoded at full size (both, when the ensemble mixes them).
    A bad file comes back as its error message (not an exception): an exception raised in a loader worker reaches
    the user wrapped in a worker traceback, the message alone is one clear line.
    """

    def __init__(self, paths: list[str], inputs: list):
        self.paths = list(paths)
        self.inputs = [tuple(x) if len(x) == 3 else (*x, None) for x in inputs]   # (h, w) alone: no crop
        whole = [(h, w) for h, w, crop in self.inputs if crop is None]
        self.at_least = (max(h for h, _ in whole), max(w for _, w in whole)) if whole else None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            reduced = read_image(self.paths[i], at_least=self.at_least) if self.at_least else None
            full = read_image(self.paths[i]) if any(c is not None for *_, c in self.inputs) else None
        except UserError as err:
            return tuple(torch.zeros(3, h, w, dtype=torch.uint8) for h, w, _ in self.inputs), str(err)
        out = []
        for h, w, crop in self.inputs:
            image = reduced if crop is None else np.ascontiguousarray(crop(i, full))
            out.append(torch.from_numpy(np.ascontiguousarray(resize(image, h, w).transpose(2, 0, 1))))
        return tuple(out), ""


def infer(members: list[Member], paths: list[str], *, views: list[str], merge, batch_size: int, workers: int,
          device: torch.device, precision, console: Console | None = None,
          croppers: list[Cropper | None] | None = None) -> list[dict[str, np.ndarray]]:
    """Per member: {trained head: (N, C) probabilities merged over the TTA views} in image order, and a years
    head's year distribution under years_key(head), merged over the views alike.

    `croppers`: each member's crop of these images (member_croppers); None feeds every member the whole photo."""
    croppers = croppers or [None] * len(members)
    keys = [(*m.size, c.tag if c is not None else "") for m, c in zip(members, croppers)]
    distinct = sorted(set(keys))
    inputs = [(k[0], k[1], croppers[keys.index(k)]) for k in distinct]
    by_size = [[i for i, key in enumerate(keys) if key == k] for k in distinct]
    loader = DataLoader(DecodedImages(paths, inputs), batch_size=batch_size, shuffle=False, num_workers=workers,
                        pin_memory=device.type == "cuda", persistent_workers=False)
    collected: list[dict[str, list[torch.Tensor]]] = [{n: [] for n in m.model.outputs} for m in members]
    forwards = len(members) * view_count(views)
    progress = Progress(TextColumn("predict"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TextColumn("{task.fields[rate]}"), console=console or Console(), transient=True)
    start = time.perf_counter()
    with progress, torch.inference_mode():
        task = progress.add_task("predict", total=len(paths), rate="")
        for images, errors in loader:
            bad = next((e for e in errors if e), None)
            if bad:
                raise UserError(bad)
            for size_images, group in zip(images, by_size):
                # channels_last while still uint8 (a quarter of the bytes to move), then float for the views
                x = size_images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last).float()
                views_probs = [{n: [] for n in members[i].model.outputs} for i in group]
                for name in views:
                    for view in VIEWS[name](x):
                        view = view.contiguous(memory_format=torch.channels_last)
                        for i, store in zip(group, views_probs):
                            for head, value in members[i].model.probs(view, precision).items():
                                store[head].append(value)
                for i, store in zip(group, views_probs):
                    for head, values in store.items():
                        collected[i][head].append(merge(torch.stack(values)).cpu())
            done = progress.tasks[0].completed + len(errors)
            rate = done * forwards / max(time.perf_counter() - start, 1e-9)
            progress.update(task, completed=done, rate=f"{rate:.0f} img/s")
    return [{head: torch.cat(parts).double().numpy() for head, parts in store.items()} for store in collected]


# --------------------------------------------------------------------------------------------------- inputs
def read_inputs(data, heads: dict[str, HeadSpec]) -> Inputs:
    """--data: the competition eval layout (ROOT, ROOT/eval or its info.csv), a manifest CSV, or a folder of images."""
    from ..data.competition import read_eval
    from ..data.manifest import read_manifest

    path = Path(data).expanduser()
    if not path.exists():
        raise UserError(f"--data {data}: not found; expected a competition root / eval folder, a manifest CSV or "
                        f"a folder of images")
    if path.is_file() and path.name == "info.csv":
        path = path.parent
    if path.is_dir() and ((path / "info.csv").is_file() or (path / "eval" / "info.csv").is_file()):
        frame = read_eval(path)
        return Inputs(frame=pd.DataFrame({"image_id": frame["ImageID"], "path": frame["path"]}), id_column="ImageID")
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise UserError(f"--data {data}: a file must be a manifest CSV (path + optional head columns)")
        frame = read_manifest(path, heads)
        base = path.resolve().parent
        ids = [Path(p).relative_to(base).as_posix() if Path(p).is_relative_to(base) else p for p in frame["path"]]
        return Inputs(frame=pd.concat([pd.DataFrame({"image_id": ids}), frame], axis=1), id_column="image_id",
                      manifest=path)
    files = folder_images(path)
    if not files:
        raise UserError(f"--data {data}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))} in any "
                        f"case, recursively, hidden files skipped)")
    return Inputs(frame=pd.DataFrame({"image_id": [f.relative_to(path).as_posix() for f in files],
                                      "path": [os.path.abspath(f) for f in files]}), id_column="image_id")


def manifest_truth(inputs: Inputs, heads: list[HeadSpec], composite: list[HeadSpec]) -> GroundTruth | None:
    """A manifest's own labels as truth (scored like --gt), or None when it labels nothing."""
    if inputs.manifest is None:
        return None
    frame = inputs.frame
    rows = pd.DataFrame(index=frame.index)
    for head in heads:
        if not head.derive and head.source in frame.columns:
            rows[head.name] = frame[head.source]
    for column in frame.columns:
        if column not in rows.columns and column not in ("image_id", "path"):
            rows[column] = frame[column]
    rows = rows.astype(object).where(rows.notna(), "").astype(str)
    truth = truth_from_rows(rows, [str(i) for i in frame["image_id"]], heads, composite,
                            where=f"--data {inputs.manifest}", path=inputs.manifest)
    labelled = any(np.any(t >= 0) for t in truth.targets.values())
    return truth if labelled else None


def folder_images(root: Path) -> list[Path]:
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(folder) / f for f in files if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_SUFFIXES]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


# --------------------------------------------------------------------------------------------------- scoring
def score(truth: GroundTruth, labels: dict[str, np.ndarray], heads: list[HeadSpec], pred: np.ndarray | None) -> dict:
    """composite/f1 (the competition metric: sklearn macro F1 over the classes present), composite/acc, per head
    acc and macro F1 of the decided labels; rows whose truth is unknown (-1) are left out."""
    out: dict[str, float] = {}
    if truth.composite is not None and pred is not None:
        keep = truth.composite >= 0
        y_true, y_pred = truth.composite[keep], np.asarray(pred)[keep]
        if len(y_true):
            out["composite/f1"] = float(f1_score(y_true, y_pred, average="macro"))
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
