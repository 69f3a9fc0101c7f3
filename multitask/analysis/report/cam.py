"""The report's "Where each head looks" section: class activation maps (analysis/cam.py) per head on validation photos.

Per head, on at most --cam-photos of its labelled validation photos (its most confident errors and most confident
right answers per class first, then photos spread over each true class), each map of the decided class:
- the maps over the photos of those two grids (what the head looked at when it erred, and when it was right);
- the mean map per true class, each photo's map first moved so that its face box lands on the middle half of the
  frame (photos without a face box are left out of that mean; with none at all, the maps are averaged as they are);
- per class, the share of the map's mass outside the face box: a head that decides from the background, the hair or
  a pattern beside the face (a shortcut) shows a high share.
Photos are cut as predict cuts them, each row as its own source's crop. Face boxes come from the face-box store
(data/faces.py, --cache-dir; photos not stored yet are detected once); a photo where no face is found counts in no
share. A k-fold run explains each row with the fold model that did not train on it. Maps are cached in the report
folder (cam-cache.npz) under the checkpoint's file (path, size, mtime), the method and the layer: a second report of
the same run computes none.
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ...config import DataConfig
from ...data.crops import make_cropper, source_crop
from ...data.faces import Face, clean_box, detect_faces
from ...heads import UNLABELLED, HeadSpec
from ...infer.ensemble import Member, load_ensemble
from ...runs.run_dir import FOLD_DIR, resolve_checkpoints
from ...utils.devices import pick_device
from ...utils.errors import UserError
from ...utils.io import write_bytes
from ...utils.progress import Progress
from ..cam import (
    CANONICAL_FACE,
    aligned,
    area_outside,
    feature_layer,
    head_maps,
    model_inputs,
    overlay,
    share_outside,
    unit,
)
from . import figures as figs
from .html import Section
from .predictions import Predictions, slugify

PHOTOS = 32                  # --cam-photos: maps per head by default
WRONG_TILES, RIGHT_TILES = 8, 2   # the galleries: most confident errors; most confident right answers per class
METHOD = "gradcam"
CACHE = "cam-cache.npz"
VERSION = 1                  # of how the maps are made: part of the cache key


@dataclass
class Chosen:
    """A head's photos: table rows, and which of them the galleries show."""
    rows: np.ndarray
    wrong: list[int]
    right: list[int]


@dataclass
class Found:
    """The chosen rows as the model saw them: pixels, the face box in that frame (None: none), and their maps."""
    images: dict[int, np.ndarray] = field(default_factory=dict)     # row -> H x W x 3 uint8
    boxes: dict[int, tuple | None] = field(default_factory=dict)
    maps: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)   # (head, row) -> H x W in 0..1
    cached: int = 0      # maps taken from the cache
    computed: int = 0    # maps made now


def analyse_cams(p: Predictions, run_dir: Path | None, out: Path, thumbs, *, photos: int = PHOTOS,
                 cache_dir=None) -> tuple[dict, Section] | None:
    """(numbers, section); None when turned off (--cam-photos 0) and for a predictions table (it names no model)."""
    if photos <= 0:
        return None
    if run_dir is None:   # a predictions table names no model
        return None
    section = Section(id="cam", title="Where each head looks")
    heads = [h for h in p.heads if h.name in p.targets]
    chosen = {h.name: choose(p, h, photos) for h in heads}
    try:
        found, layer = compute(p, run_dir, out, chosen, thumbs, cache_dir=cache_dir, notes=p.notes)
    except UserError as err:
        section.note(f"No class activation maps: {err}")
        return {"skipped": str(err)}, section
    numbers = {"method": METHOD, "layer": layer, "photos_per_head": photos, "computed": found.computed,
               "cached": found.cached, "heads": {}}
    section.text(f"Grad-CAM maps of each head's decided class on up to {photos} validation photos per head (the "
                 f"trunk's last feature map, {layer}), over the photos as the model saw them, the face box framed "
                 f"white. The share outside the face box is of the map's mass: a high share means the head decides "
                 f"from outside the face (background, hair, a pattern beside it). {found.computed} map(s) computed, "
                 f"{found.cached} taken from {CACHE}.")
    for head in heads:
        value = head_part(section, p, head, chosen[head.name], found)
        if value is not None:
            numbers["heads"][head.name] = value
    return numbers, section


def choose(p: Predictions, head: HeadSpec, photos: int) -> Chosen:
    """Up to `photos` labelled rows: the galleries' first, then each class's other rows spread evenly over them,
    taken class by class in turn (so a small budget still reaches every class)."""
    y, decided = p.targets[head.name], p.decided(head.name)
    confidence = p.probs[head.name].max(1)
    labelled = np.flatnonzero(y != UNLABELLED)
    order = lambda rows: rows[np.argsort(-confidence[rows], kind="stable")].tolist()  # noqa: E731
    wrong = order(labelled[y[labelled] != decided[labelled]])[:WRONG_TILES]
    right = [r for c in range(head.num_classes)
             for r in order(labelled[(y[labelled] == c) & (decided[labelled] == c)])[:RIGHT_TILES]]
    picked = list(dict.fromkeys(wrong + right))
    taken, per_class = set(picked), []
    for c in range(head.num_classes):
        rows = [r for r in labelled[y[labelled] == c].tolist() if r not in taken]
        k = min(len(rows), photos)
        per_class.append([rows[i] for i in np.linspace(0, len(rows) - 1, k).round().astype(int)] if k else [])
    turns = [rows[k] for k in range(max(map(len, per_class), default=0)) for rows in per_class if k < len(rows)]
    shown = set(list(dict.fromkeys(picked + turns))[:photos])
    return Chosen(np.array(sorted(shown), dtype=np.int64), [r for r in wrong if r in shown],
                  [r for r in right if r in shown])


# ----------------------------------------------------------------------------------------------- computing the maps
def compute(p: Predictions, run_dir: Path, out: Path, chosen: dict[str, Chosen], thumbs, *, cache_dir,
            notes: list[str]) -> tuple[Found, str]:
    """Every chosen row's pixels, face box and maps, each checkpoint on its rows; (found, the layer's name)."""
    cache, found, layer_name = MapCache(out / CACHE), Found(), ""
    for path, mine in checkpoint_rows(Path(run_dir), p):
        wanted = {head: [r for r in c.rows.tolist() if mine[r]] for head, c in chosen.items()}
        rows = sorted({r for rs in wanted.values() for r in rs})
        if not rows:
            continue
        member = load_ensemble([path], device=pick_device("auto"), backend="torch")[0]
        net = member.model.net
        layer = feature_layer(net, member.size)   # before any photo is read: a trunk without a map fails at once
        layer_name = layer.name
        read_inputs(p, rows, member, thumbs, found, cache_dir=cache_dir, notes=notes)
        key = cache.key(path, layer.name, member.size)
        missing = [h for h in wanted if h not in net.head_names]
        if missing:
            notes.append(f"class activation maps: {', '.join(missing)} not a head of {path} (a derived head's "
                         f"part): no maps")
        todo = {h: [r for r in rs if r in found.images] for h, rs in wanted.items() if h in net.head_names}
        with Progress("class activation maps", total=sum(map(len, todo.values())), stderr=True,
                      transient=True) as bar:
            for head, head_rows in todo.items():
                maps = head_rows_maps(p, head, head_rows, net, layer, found, cache, key, bar)
                found.maps.update({(head, r): m for r, m in zip(head_rows, maps)})
    cache.save()
    found.cached, found.computed = cache.hits, cache.computed
    return found, layer_name


def checkpoint_rows(run_dir: Path, p: Predictions) -> list[tuple[Path, np.ndarray]]:
    """(checkpoint, mask of the table rows it explains): a run's one model on every row; a k-fold run's fold k
    model on the rows of fold k (the rows it was validated on, never trained on)."""
    paths = resolve_checkpoints([run_dir])
    if len(paths) == 1:
        return [(paths[0], np.ones(len(p.table), bool))]
    if "fold" not in p.table.columns:
        raise UserError(f"{run_dir}: {len(paths)} fold checkpoints, but its oof.csv has no fold column to match "
                        f"rows to them")
    folds = p.table["fold"].to_numpy()
    return [(path, folds == int(m.group(1))) for path in paths if (m := FOLD_DIR.fullmatch(path.parent.name))]


def read_inputs(p: Predictions, rows: list[int], member: Member, thumbs, found: Found, *, cache_dir,
                notes: list[str]) -> None:
    """Pixels and face boxes of `rows` into `found`: each row cut as its source's photos were (predict's steps)."""
    rows = [r for r in rows if r not in found.images]
    located = [thumbs.resolve(str(p.table["path"].iloc[r])) if "path" in p.table.columns else None for r in rows]
    lost = [str(p.table["image_id"].iloc[r]) for r, f in zip(rows, located) if f is None]
    if lost:
        notes.append(f"class activation maps: {len(lost)} photo(s) not found, e.g. {lost[0]}")
    rows, paths = [r for r, f in zip(rows, located) if f], [str(f) for f in located if f]
    faces = face_boxes(paths, cache_dir, notes)
    specs = member.cfg.data.resolved_sources()
    names = (p.table["source"].astype(str).iloc[rows].tolist() if "source" in p.table.columns
             else [""] * len(rows))
    for name in dict.fromkeys(names):
        at = [k for k, n in enumerate(names) if n == name]
        spec = source_crop(member.cfg.data, name) if name in specs else member.crop_cfg   # a new photo: predict's
        if spec.crop == "face" and faces is None:
            raise UserError(f"source {name or 'main'} is cut by its face box, and the face boxes are unavailable")
        mine = [faces[k] for k in at] if faces is not None else [None] * len(at)
        cropper, _ = make_cropper(spec, member.size, faces=mine)
        images, errors = model_inputs([paths[k] for k in at], member.size, cropper)
        for j, k in enumerate(at):
            if errors[j]:
                notes.append(f"class activation maps: {errors[j]}")
                continue
            found.images[rows[k]] = images[j].permute(1, 2, 0).numpy()
            found.boxes[rows[k]] = input_box(mine[j], cropper, j)


def face_boxes(paths: list[str], cache_dir, notes: list[str]) -> list[Face | None] | None:
    """Each photo's stored face box (detected now where none is stored); None, with a note, without a detector."""
    try:
        with Progress("face boxes", stderr=True, transient=True) as bar:
            return detect_faces(paths, cache_dir=cache_dir or DataConfig().cache_dir, progress=bar.report)
    except UserError as err:
        notes.append(f"class activation maps: no face boxes ({err}): no share outside the face")
        return None


def input_box(face: Face | None, cropper, index: int):
    """The face box (relative) in the frame the model saw: the photo's box moved into its crop; None without one."""
    if face is None or face.box is None:
        return None
    h, w = face.height, face.width
    y0, y1, x0, x1 = cropper.region(index, h, w) if cropper is not None else (0, h, 0, w)
    b = face.box
    return clean_box(((b[0] * w - x0) / (x1 - x0), (b[1] * h - y0) / (y1 - y0), (b[2] * w - x0) / (x1 - x0),
                      (b[3] * h - y0) / (y1 - y0)))


def head_rows_maps(p: Predictions, head: str, rows: list[int], net, layer, found: Found, cache: "MapCache", key: str,
                   bar) -> list[np.ndarray]:
    """The maps of the decided class on `rows`: from the cache where it has them, computed (and cached) otherwise."""
    ids = [str(p.table["image_id"].iloc[r]) for r in rows]
    classes = p.decided(head)[rows]
    maps = cache.lookup(key, head, ids, classes)
    todo = [i for i, m in enumerate(maps) if m is None]
    bar.update(len(rows) - len(todo))
    for start in range(0, len(todo), 16):
        part = todo[start:start + 16]
        images = torch.from_numpy(np.stack([found.images[rows[i]] for i in part])).permute(0, 3, 1, 2)
        made, _ = head_maps(net, head, images, layer=layer, method=METHOD, classes=classes[part])
        cache.computed += len(part)
        for i, m in zip(part, made):
            maps[i] = m
        bar.update(len(part), images=len(part))
    cache.store(key, head, ids, classes, maps)
    return maps


class MapCache:
    """Maps by (checkpoint key, head, image id, class) in one .npz of the report folder, rewritten at the end with
    only what this report used (an old checkpoint's maps do not pile up)."""

    def __init__(self, path: Path):
        self.path, self.kept = path, {}
        self.hits = self.computed = 0
        try:
            with np.load(path, allow_pickle=False) as data:
                self.old = {name: data[name] for name in data.files}
        except (OSError, ValueError):
            self.old = {}

    @staticmethod
    def key(checkpoint: Path, layer: str, size) -> str:
        st = Path(checkpoint).stat()
        text = f"{Path(checkpoint).resolve()}|{st.st_size}|{st.st_mtime_ns}|{METHOD}|{layer}|{tuple(size)}|{VERSION}"
        return hashlib.sha1(text.encode()).hexdigest()[:16]

    def lookup(self, key: str, head: str, ids: list[str], classes: np.ndarray) -> list[np.ndarray | None]:
        prefix = f"{key}.{head}."
        if prefix + "ids" not in self.old:
            return [None] * len(ids)
        at = {(i, int(c)): k for k, (i, c) in enumerate(zip(self.old[prefix + "ids"], self.old[prefix + "classes"]))}
        maps = self.old[prefix + "maps"]
        self.hits += sum((i, int(c)) in at for i, c in zip(ids, classes))
        return [maps[at[(i, int(c))]].astype(np.float32) if (i, int(c)) in at else None for i, c in zip(ids, classes)]

    def store(self, key: str, head: str, ids: list[str], classes: np.ndarray, maps: list[np.ndarray]) -> None:
        if maps:
            prefix = f"{key}.{head}."
            self.kept.update({prefix + "ids": np.array(ids), prefix + "classes": np.asarray(classes, np.int64),
                              prefix + "maps": np.stack(maps).astype(np.float16)})

    def save(self) -> None:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **self.kept)
        write_bytes(self.path, buffer.getvalue(), what="class activation map cache")


# ----------------------------------------------------------------------------------------------- the page
def head_part(section: Section, p: Predictions, head: HeadSpec, chosen: Chosen, found: Found) -> dict | None:
    """The head's sub-section (share table, mean maps, galleries) and its numbers; None (a note) without maps."""
    rows = [r for r in chosen.rows.tolist() if (head.name, r) in found.maps]
    sub = section.sub(f"cam-{slugify(head.name)}", f"Head: {head.name}")
    if not rows:
        sub.note(f"No maps for head {head.name} (see the caveats at the end).")
        return None
    maps = {r: found.maps[(head.name, r)] for r in rows}
    shares = {r: share_outside(maps[r], found.boxes[r]) for r in rows if found.boxes.get(r) is not None}
    y = p.targets[head.name]
    sources = (p.table["source"].astype(str).to_numpy() if "source" in p.table.columns
               else np.full(len(p.table), ""))
    names = list(dict.fromkeys(sources[rows].tolist()))
    groups = {(s, c): [r for r in rows if sources[r] == s and y[r] == k] for s in names
              for k, c in enumerate(head.classes)}
    numbers = {**stats(rows, shares, maps, found),
               "classes": {c: stats([r for r in rows if y[r] == k], shares, maps, found)
                           for k, c in enumerate(head.classes)}}
    if len(names) > 1:
        numbers["sources"] = {s: {c: stats(groups[(s, c)], shares, maps, found) for c in head.classes}
                              for s in names}
    overall, empty = numbers["outside_face"], numbers["empty_maps"]
    said = (f"{overall:.0%} of the map's mass falls outside the face box ({numbers['area_outside']:.0%} would, spread "
            f"evenly)" if np.isfinite(overall) else
            "no share outside the face: " + ("no face box was found in any of them" if not shares else
                                              "every map with a face box is empty"))
    sub.text(f"{len(rows)} photos, {len(shares)} with a face box, {empty} empty map(s): {said}.")
    many = len(names) > 1
    sub.table([*(["source"] if many else []), "true class", "photos", "with a face box", "empty maps",
               "share outside the face box", "spread evenly"],
              [[*([s] if many else []), c, len(g), (v := stats(g, shares, maps, found))["with_face"],
                v["empty_maps"], v["outside_face"], v["area_outside"]] for (s, c), g in groups.items() if g],
              caption="the share of each map's mass outside the face box, averaged over the photos with a face box "
                      "(an empty map: no evidence for the decided class anywhere, so no share), and what a map "
                      "spread evenly over the frame would put there: a share well below it is a head looking at "
                      "the face")
    sub.figure(f"{slugify(head.name)}_cam_means", figs.cam_means_figure(
        [[mean_map(c, groups[(s, c)], maps, found) for c in head.classes] for s in names],
        names if many else [""], CANONICAL_FACE, f"{head.name}: mean map per true class"),
        caption="Each photo's map moved so that its face box lands on the dashed box, then averaged (photos "
                "without a face box are left out; a panel without a dashed box averages the maps as they are).")
    for name, picked, title in (("wrong", chosen.wrong, "most confident errors: the map of the wrong class"),
                                ("right", chosen.right, "most confident right answers, per class")):
        picked = [r for r in picked if r in maps]
        if picked:
            sub.figure(f"{slugify(head.name)}_cam_{name}", figs.crop_grid(
                [overlay(found.images[r], maps[r], found.boxes.get(r)) for r in picked],
                [tile_title(p, head, r, shares.get(r)) for r in picked],
                [int(p.targets[head.name][r]) != int(p.decided(head.name)[r]) for r in picked],
                f"{head.name}: {title}"), caption=f"{head.name}: its {title} (framed red: wrong; the face box white).")
    return numbers


def stats(rows: list[int], shares: dict[int, float], maps: dict[int, np.ndarray], found: Found) -> dict:
    """Photos, those with a face box, empty maps (grad-cam found no evidence for the class: all of it negative, cut
    by its ReLU), the mean share outside the face box over the photos with a box and a map, and the mean share of
    their frames outside the box (what maps spread evenly would give)."""
    kept = [r for r in rows if r in shares and np.isfinite(shares[r])]
    return {"photos": len(rows), "with_face": sum(r in shares for r in rows),
            "empty_maps": sum(float(maps[r].sum()) <= 0 for r in rows),
            "outside_face": float(np.mean([shares[r] for r in kept])) if kept else float("nan"),
            "area_outside": float(np.mean([area_outside(found.boxes[r]) for r in kept])) if kept else float("nan")}


def mean_map(label: str, rows: list[int], maps: dict, found: Found) -> tuple[str, np.ndarray | None, bool]:
    """(panel title, the mean map, whether it is aligned by face boxes); None for a class without photos."""
    if not rows:
        return f"{label} (no photos)", None, False
    boxed = [r for r in rows if found.boxes.get(r) is not None]
    if boxed:
        return f"{label} (n={len(boxed)})", np.mean([aligned(maps[r], found.boxes[r]) for r in boxed], axis=0), True
    return f"{label} (n={len(rows)}, no face box)", np.mean([unit(maps[r]) for r in rows], axis=0), False


def tile_title(p: Predictions, head: HeadSpec, row: int, share: float | None) -> str:
    true, decided = int(p.targets[head.name][row]), int(p.decided(head.name)[row])
    where = f"{share:.0%} outside face" if share is not None and np.isfinite(share) else "no face box"
    return (f"{Path(str(p.table['image_id'].iloc[row])).name[-16:]}\ntrue {head.classes[true]}\n"
            f"pred {head.classes[decided]} {float(p.probs[head.name][row].max()):.2f}\n{where}")
