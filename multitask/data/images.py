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

from ..errors import UserError

_JPEG_START = b"\xff\xd8"
_PNG_START = b"\x89PNG\r\n\x1a\n"


class BadImageError(UserError):
    """An image file that cannot be used (missing, empty, not an image, truncated, odd pixel format)."""


def read_image(path: str | os.PathLike) -> np.ndarray:
    """HxWx3 uint8 RGB pixels of the file at `path`; `BadImageError` naming the file and the cause otherwise."""
    path = os.fspath(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise BadImageError(f"{path}: image file not found") from None
    except (IsADirectoryError, PermissionError, OSError) as err:
        raise BadImageError(f"{path}: cannot read image file ({err.strerror or err})") from None
    if data.size == 0:
        raise BadImageError(f"{path}: image file is empty (0 bytes); re-copy it or remove it from the data set")
    _check_complete(path, data)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise BadImageError(f"{path}: not a decodable image ({data.size} bytes); expected JPEG, PNG or another "
                            f"format OpenCV reads")
    return _to_rgb8(path, image)


def _check_complete(path: str, data: np.ndarray) -> None:
    raw = data.tobytes()
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
