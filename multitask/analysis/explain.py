"""`multitask explain`: where each head looks in given photos, as class activation maps over what predict fed it.

    multitask explain --ckpt runs/quickstart/1 photo.jpg more/ --out out/explain
    multitask explain --ckpt runs/real/1/best.pt a.jpg --head mask --method gradcam++ --out out/explain

Each photo goes through predict's own steps (infer/forward.py: the checkpoint's crop, face boxes included, its size;
the model normalises): the map is of what predict saw. Writes OUT/<photo>_<head>.png per photo and head (the model's
input enlarged to about 256 pixels, the map over it, "head: class probability" above it; the class is the head's
argmax) and OUT/explain.csv (photo, head, class, probability, file). Gradients need the PyTorch model: an ONNX file
is refused, as is a trunk without a 4-d feature map (cam.py).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from rich.console import Console

from ..data.inputs import folder_images
from ..heads import HeadSpec
from ..infer.ensemble import Member, load_ensemble
from ..infer.forward import member_croppers
from ..runs.run_dir import resolve_checkpoints
from ..utils.devices import pick_device
from ..utils.errors import UserError
from ..utils.io import write_bytes, write_csv
from ..utils.progress import Progress
from .cam import METHODS, feature_layer, head_maps, model_inputs, overlay_png, show_scale
from .report.predictions import slugify

INDEX = "explain.csv"


def run_explain(*, ckpt: str, photos: list[str], out: str | Path, head: str | None = None, method: str = "gradcam",
                device: str = "auto", source: str | None = None, cache_dir=None, workers: int = 2,
                console: Console | None = None) -> pd.DataFrame:
    """Write one overlay per photo and head into `out` and the index explain.csv; returns the index."""
    console = console or Console()
    if method not in METHODS:
        raise UserError(f"--method {method}: unknown; choose from {', '.join(METHODS)}")
    member = load_member(ckpt, device=device, source=source)
    net = member.model.net
    heads = chosen_heads(member, head)
    layer = feature_layer(net, member.size)   # before any photo is read: a trunk without a map fails at once
    paths = photo_paths(photos)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cropper = member_croppers([member], paths, workers=workers, console=console, cache_dir=cache_dir)[0]
    images, errors = model_inputs(paths, member.size, cropper)
    bad = next((e for e in errors if e), None)
    if bad:
        raise UserError(bad)
    pictures = images.permute(0, 2, 3, 1).numpy()
    names, scale, rows = file_names(paths), show_scale(member.size), []
    with Progress("explain", total=len(heads) * len(paths), console=console, transient=True) as bar:
        for spec in heads:
            maps, probs = head_maps(net, spec.name, images, layer=layer, method=method)
            for i, path in enumerate(paths):
                c = int(probs[i].argmax())
                file = out / f"{names[i]}_{slugify(spec.name)}.png"
                write_bytes(file, overlay_png(pictures[i], maps[i], f"{spec.name}: {spec.classes[c]} {probs[i, c]:.2f}",
                                              scale=scale))
                rows.append({"photo": path, "head": spec.name, "class": spec.classes[c],
                             "probability": round(float(probs[i, c]), 4), "file": file.name})
                bar.update(images=1)
    index = pd.DataFrame(rows)
    write_csv(index, out / INDEX)
    console.print(f"explain: {len(rows)} overlays ({len(paths)} photo(s) x {len(heads)} head(s), {method} on "
                  f"{layer.name}, a {layer.grid[0]}x{layer.grid[1]} map) -> {out}", markup=False)
    return index


def load_member(ckpt: str, *, device: str, source: str | None) -> Member:
    """The one PyTorch model to explain, loaded as predict loads it; ONNX files and k-fold parents refused."""
    if Path(ckpt).suffix.lower() == ".onnx":
        raise UserError(f"--ckpt {ckpt}: an ONNX model has no gradients to draw maps from; give its checkpoint "
                        f"(.pt), run dir or safetensors export folder")
    found = resolve_checkpoints([ckpt])
    if len(found) > 1:
        raise UserError(f"--ckpt {ckpt}: {len(found)} checkpoints (a k-fold run dir); explain one model: give one "
                        f"fold's run dir, e.g. {found[0].parent}")
    return load_ensemble(found, device=pick_device(device), backend="torch", source=source)[0]


def chosen_heads(member: Member, head: str | None) -> list[HeadSpec]:
    heads = member.heads
    if head is None:
        return heads
    picked = [h for h in heads if h.name == head]
    if not picked:
        raise UserError(f"--head {head}: the model has no such head; its heads: {', '.join(h.name for h in heads)}")
    return picked


def photo_paths(photos: list[str]) -> list[str]:
    """The photos given: files as they are, folders by their images (sorted)."""
    paths: list[str] = []
    for item in photos:
        path = Path(item)
        if path.is_dir():
            found = folder_images(path)
            if not found:
                raise UserError(f"{item}: no images in this folder (expected .jpg, .jpeg or .png files)")
            paths.extend(str(p) for p in found)
        elif path.is_file():
            paths.append(str(path))
        else:
            raise UserError(f"{item}: no such photo or folder")
    return paths


def file_names(paths: list[str]) -> list[str]:
    """A distinct file stem per photo: its name, its folder's name too where names repeat (the competition's
    mask1.jpg in every person's folder), its position where even that repeats."""
    stems = [Path(p).stem for p in paths]
    longer = [f"{Path(p).parent.name}_{Path(p).stem}" if stems.count(s) > 1 else s for p, s in zip(paths, stems)]
    return [f"{i}_{name}" if longer.count(name) > 1 else name for i, name in enumerate(longer)]
