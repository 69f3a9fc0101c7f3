"""Read any image file as HxWx3 uint8 RGB, and resize it; bad files raise one clear error.

    image = read_image("data/train/images/000001_female_Asian_45/mask1.jpg")   # (512, 384, 3) uint8, RGB
    small = resize(image, 128, 96)

Why not `cv2.imread`: it cannot open non-ASCII paths on every platform and hides the cause of a failure (it returns
None). We read the bytes ourselves (`np.fromfile`) and decode with `cv2.imdecode(..., IMREAD_UNCHANGED)`, so we see the
real channel count and bit depth and convert them here: grayscale -> RGB, alpha dropped, 16 bit -> 8 bit.

Why the end-marker check: libjpeg decodes a cut-off JPEG "successfully" and fills the missing rows with grey, so a
half-copied data set trains on grey faces without a word. A JPEG must end its last scan with the EOI marker (FFD9), a
PNG with its IEND chunk; a file that does not is reported as truncated.
"""
from __future__ import annotations

import os

import cv2
import numpy as np

from ..utils.errors import UserError

_JPEG_START = b"\xff\xd8"
_PNG_START = b"\x89PNG\r\n\x1a\n"


class BadImageError(UserError):
    """An image file that cannot be used (missing, empty, not an image, truncated, odd pixel format)."""


def read_image(path: str | os.PathLike, *, at_least: tuple[int, int] | None = None) -> np.ndarray:
    """HxWx3 uint8 RGB pixels of the file at `path`; `BadImageError` naming the file and the cause otherwise.

    `at_least=(height, width)`, for a caller that will shrink the image to that size: a JPEG is then decoded at 1/2,
    1/4 or 1/8 scale (libjpeg's DCT scaling), the smallest that still covers the size. That skips most of the
    inverse DCT and most of the shrink (BENCHMARKS.md has the time it saves), and the DCT's scaling is an
    alias-free downsample like INTER_AREA. EXIF orientation is ignored on both paths alike.
    """
    path = os.fspath(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise BadImageError(f"{path}: image file not found") from None
    except (IsADirectoryError, PermissionError, OSError) as err:
        raise BadImageError(f"{path}: cannot read image file ({err.strerror or err})") from None
    if data.size == 0:
        raise BadImageError(f"{path}: image file is empty (0 bytes); re-copy it or remove it from the data set")
    raw = data.tobytes()   # one copy of the file's bytes for the marker checks below
    _check_complete(path, raw)
    flag = cv2.IMREAD_UNCHANGED
    if at_least is not None:
        flag = _reduced_flag(raw, *at_least)
    image = cv2.imdecode(data, flag)
    if image is None:
        raise BadImageError(f"{path}: not a decodable image ({data.size} bytes); expected JPEG, PNG or another "
                            f"format OpenCV reads")
    return _to_rgb8(path, image)


# 8-bit colour decode at 1/r scale, EXIF orientation ignored as IMREAD_UNCHANGED ignores it
_REDUCED = {r: getattr(cv2, f"IMREAD_REDUCED_COLOR_{r}") | cv2.IMREAD_IGNORE_ORIENTATION for r in (8, 4, 2)}
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}   # start-of-frame markers


def _reduced_flag(raw: bytes, height: int, width: int) -> int:
    """The imdecode flag for the coarsest JPEG scale still >= height x width; IMREAD_UNCHANGED otherwise."""
    size = jpeg_size(raw) if raw.startswith(_JPEG_START) else None
    if size is not None:
        h, w = size
        for r, flag in _REDUCED.items():
            if -(-h // r) >= height and -(-w // r) >= width:   # libjpeg rounds scaled sizes up
                return flag
    return cv2.IMREAD_UNCHANGED


def jpeg_size(raw: bytes) -> tuple[int, int] | None:
    """(height, width) from a JPEG's frame header without decoding; None if the header cannot be found."""
    i = 2
    while i + 9 < len(raw):
        if raw[i] != 0xFF:
            return None
        marker = raw[i + 1]
        if marker == 0xFF:           # fill byte before a marker
            i += 1
            continue
        if marker in _SOF:
            return int.from_bytes(raw[i + 5:i + 7], "big"), int.from_bytes(raw[i + 7:i + 9], "big")
        if marker == 0xDA:           # start of scan before any frame header: not a JPEG we understand
            return None
        i += 2 + int.from_bytes(raw[i + 2:i + 4], "big")
    return None


def _check_complete(path: str, raw: bytes) -> None:
    if raw.startswith(_JPEG_START):
        # Entropy-coded scan data never contains FFD9 (0xFF is stuffed as FF00), so the EOI marker must follow the
        # last start-of-scan (FFDA). Looking after the last scan rather than at the final two bytes keeps files with
        # trailing padding or appended data (some phones) readable, and ignores EOIs of embedded EXIF thumbnails.
        last_scan = raw.rfind(b"\xff\xda")
        if last_scan < 0 or raw.find(b"\xff\xd9", last_scan) < 0:
            raise BadImageError(f"{path}: truncated JPEG (no end-of-image marker after the last scan, "
                                f"{len(raw)} bytes); re-copy the file")
    elif raw.startswith(_PNG_START):
        if raw.rfind(b"IEND") < 0:
            raise BadImageError(f"{path}: truncated PNG (no IEND chunk, {len(raw)} bytes); re-copy the file")


def _to_rgb8(path: str, image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise BadImageError(f"{path}: unsupported pixel type {image.dtype}; expected 8- or 16-bit integer pixels")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    channels = image.shape[2]
    if channels == 1:
        return cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2RGB)
    if channels == 2:  # gray + alpha
        return cv2.cvtColor(np.ascontiguousarray(image[:, :, 0]), cv2.COLOR_GRAY2RGB)
    if channels == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if channels == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    raise BadImageError(f"{path}: unsupported channel count {channels}; expected gray, RGB or RGBA")


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """`image` at height x width; INTER_AREA when shrinking (no aliasing), LINEAR otherwise; same size = no copy."""
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    shrinking = height <= h and width <= w
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interpolation)
