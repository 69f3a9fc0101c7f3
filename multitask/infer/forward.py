"""The forward pass of an ensemble over a list of photos: each decoded once, cut and resized once per distinct
input, every member and TTA view run on the same batch.

    croppers = member_croppers(members, paths)           # each member's training crop (face boxes detected once)
    per_member = run_members(members, paths, views=views, merge=merge_fn, settings=settings, croppers=croppers)

Probabilities are merged over the TTA views per member here; merging over members is ensemble.combine's.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from rich.console import Console
from torch.utils.data import DataLoader, Dataset

from ..config import DataConfig
from ..data.crops import face_plan, make_cropper
from ..data.faces import Cropper
from ..data.images import read_image, resize
from ..utils.devices import Precision
from ..utils.errors import UserError
from ..utils.progress import Progress
from .ensemble import Member
from .tta import VIEWS, view_count

Input = tuple[int, int, "Cropper | None"]   # what a model is fed: height, width and the crop (None: whole photo)


@dataclass
class RunSettings:
    """How the forward pass runs: batch size, loader workers, device and precision (predict's --batch-size,
    --workers, --device, --amp)."""
    batch_size: int
    workers: int
    precision: Precision

    @property
    def device(self) -> torch.device:
        return self.precision.device


def member_croppers(members: list[Member], paths: list[str], *, workers: int = 2, console: Console | None = None,
                    cache_dir=None) -> list[Cropper | None]:
    """Each member's training crop over these images; face boxes are detected once for all face-crop members and
    stored in `cache_dir` (the user's; None: the default data.cache_dir, never a checkpoint's own)."""
    face = [m for m in members if m.crop == "face"]
    plan = None
    if face:
        store = cache_dir if cache_dir is not None else DataConfig().cache_dir
        with Progress("face boxes", stderr=True, transient=True) as bar:
            plan = face_plan(paths, cache_dir=store, workers=workers, progress=bar.report)
        (console or Console()).print(plan.summary(), markup=False)
    return [make_cropper(m.crop_cfg, m.cfg.data.image_size, plan=plan)[0] for m in members]


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


def run_members(members: list[Member], paths: list[str], *, views: list[str], merge, settings: RunSettings,
                croppers: list[Cropper | None] | None = None,
                console: Console | None = None) -> list[dict[str, np.ndarray]]:
    """Per member: {trained head: (N, C) probabilities merged over the TTA views} in image order, and a years
    head's year distribution under years_key(head), merged over the views alike.

    `croppers`: each member's crop of these images (member_croppers); None feeds every member the whole photo."""
    croppers = croppers or [None] * len(members)
    keys = [(*m.size, c.tag if c is not None else "") for m, c in zip(members, croppers)]
    distinct = sorted(set(keys))
    inputs = [(k[0], k[1], croppers[keys.index(k)]) for k in distinct]
    groups = [[members[i] for i, key in enumerate(keys) if key == k] for k in distinct]   # members fed one input
    loader = DataLoader(DecodedImages(paths, inputs), batch_size=settings.batch_size, shuffle=False,
                        num_workers=settings.workers, pin_memory=settings.device.type == "cuda")
    collected: dict[int, dict[str, list[torch.Tensor]]] = {id(m): {n: [] for n in m.model.outputs} for m in members}
    forwards = len(members) * view_count(views)
    with Progress("predict", total=len(paths), console=console, transient=True, speed_factor=forwards) as bar, \
            torch.inference_mode():
        for images, errors in loader:
            bad = next((e for e in errors if e), None)
            if bad:
                raise UserError(bad)
            for batch, group in zip(images, groups):
                for member, merged in zip(group, views_merged(group, batch, views, merge, settings)):
                    for head, value in merged.items():
                        collected[id(member)][head].append(value)
            bar.update(len(errors), images=len(errors))
    return [{head: torch.cat(parts).double().numpy() for head, parts in collected[id(m)].items()} for m in members]


def views_merged(group: list[Member], batch: torch.Tensor, views: list[str], merge,
                 settings: RunSettings) -> list[dict[str, torch.Tensor]]:
    """Each member's probabilities on one batch, merged over every TTA view (on the CPU, for collecting)."""
    # channels_last while still uint8 (a quarter of the bytes to move), then float for the views
    x = batch.to(settings.device, non_blocking=True).contiguous(memory_format=torch.channels_last).float()
    stores = [{n: [] for n in m.model.outputs} for m in group]
    for name in views:
        for view in VIEWS[name](x):
            view = view.contiguous(memory_format=torch.channels_last)
            for member, store in zip(group, stores):
                for head, value in member.model.probs(view, settings.precision).items():
                    store[head].append(value)
    return [{head: merge(torch.stack(values)).cpu() for head, values in store.items()} for store in stores]
