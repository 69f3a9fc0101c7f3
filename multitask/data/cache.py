"""Decode-once image cache: every image decoded and resized one time, stored as uint8 in a memory-mapped file.

    cache = ImageCache.build(frame["path"], height=128, width=96, cache_dir=".cache/images")
    cache[0]                    # (128, 96, 3) uint8 read-only view into the file, no decode
    cache.read(0)               # the same pixels as a new writable array (what the Dataset uses)
    train = cache.subset(train_idx)

Why: JPEG decode + resize of a 384x512 photo costs more than a resnet18 forward pass on a 128x96 crop, and epoch after
epoch it is the same work. Decoding once into `<cache_dir>/<key>.u8` (N x H x W x 3 uint8) turns every later epoch
(and every later run) into page-cache reads; the OS shares those pages between DataLoader workers and runs.
The Dataset reads a row with one `pread` into a new array (`read`) rather than slicing the memory map: it needs its
own writable copy anyway, and mapped pages stay in each process's RSS, growing every loader worker with the data set
(BENCHMARKS.md, Memory); read, they live only in the page cache, so RSS stays flat however large the data set.

The key is a SHA-1 over each (path, file size, mtime_ns) and the target height x width (and, for data.crop other
than none, the crop's tag: mode, margin, detector), so touching or replacing any image, or changing the image size
or the crop, makes a new cache. The pixels are written to a temporary file that is renamed
into place (`os.replace`) only when complete, and the metadata (`<key>.json`) is written after it, so an interrupted
build is never reused. Its temp file is deleted by the next build (a live build holds a lock on it), and its space
is reserved up front, so a full disk is a clear error rather than a crash on the first unbacked page. Pickling an
ImageCache sends only the file name, shape and row map: DataLoader workers reopen the map read-only themselves.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Literal

import numpy as np

from ..utils.errors import UserError
from ..utils.io import atomic_write, write_with
from .faces import Cropper, read_pixels
from .images import BadImageError

FORMAT_VERSION = 2   # 2: JPEGs decoded at a DCT scale (read_image at_least)


class ImageCache:
    """Rows of a memory-mapped N x H x W x 3 uint8 file; `valid[i]` is False for images skipped as bad."""

    def __init__(self, *, file: str, paths: list[str], height: int, width: int, valid: np.ndarray,
                 bad: list[tuple[str, str]], rows: np.ndarray | None = None, reused: bool = False):
        self.file = file
        self.height, self.width = height, width
        self.n_file = len(valid)                                  # rows in the file (the whole build)
        self.rows = np.arange(self.n_file) if rows is None else np.asarray(rows, dtype=np.int64)
        self.valid = np.asarray(valid, dtype=bool)[self.rows]     # per exposed row
        self.bad = bad                                            # (path, reason) for the whole build
        self.reused = reused          # True when build() found a complete cache and decoded nothing
        self._file_paths = paths      # dropped when pickled: workers only need pixels
        self._file_valid = np.asarray(valid, dtype=bool)
        self._array: np.memmap | None = None
        self._fd: int | None = None   # opened on first read, in whichever process reads

    @property
    def paths(self) -> list[str]:
        if self._file_paths is None:
            raise AttributeError("ImageCache.paths is not sent to DataLoader workers; read it in the main process")
        return [self._file_paths[i] for i in self.rows]

    # ------------------------------------------------------------------------------------------- building
    @classmethod
    def build(cls, paths: Iterable[str], *, height: int, width: int, cache_dir: str | os.PathLike,
              on_bad_image: Literal["error", "skip"] = "error", workers: int = 2,
              progress: Callable[[int, int], None] | None = None, crop: Cropper | None = None) -> "ImageCache":
        """Reuse the cache for exactly these files at this size, or decode them all into a new one.

        `progress(done, total)` is called as images are decoded (not when the cache is reused). `crop` cuts each
        photo (by its row) before the resize (data.crop; faces.py).
        With on_bad_image='error' the first bad image raises BadImageError; with 'skip' its row stays zero,
        `valid[i]` is False and (path, reason) is listed in `bad`.
        """
        if on_bad_image not in ("error", "skip"):
            raise ValueError(f"on_bad_image: expected 'error' or 'skip', got {on_bad_image!r}")
        paths = [os.fspath(p) for p in paths]
        if not paths:
            raise ValueError("ImageCache.build: no image paths given")
        cache_dir = Path(os.path.abspath(cache_dir))  # workers may not share the cwd
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            remove_abandoned_builds(cache_dir)
            key = cache_key(paths, height=height, width=width, crop=crop)
            data_file, meta_file = cache_dir / f"{key}.u8", cache_dir / f"{key}.json"
            cache = cls._load(data_file, meta_file, paths, height, width)
            if cache is None:
                valid, bad = _decode_all(paths, height, width, data_file, on_bad_image, workers, progress, crop)
                meta = {"version": FORMAT_VERSION, "height": height, "width": width, "paths": paths,
                        "valid": valid.tolist(), "bad": bad}
                write_with(meta_file, lambda f: json.dump(meta, f), errors=())   # OSError: the message below
                cache = cls(file=str(data_file), paths=paths, height=height, width=width, valid=valid, bad=bad)
        except OSError as err:
            need = len(paths) * height * width * 3
            size = f"{need / 2**30:.1f} GiB" if need >= 2**30 else f"{need / 2**20:.1f} MiB"
            raise UserError(f"data.cache_dir: cannot write the image cache in {cache_dir} ({err.strerror or err}; it "
                            f"needs {size}); free space there, set data.cache_dir to a writable folder, or "
                            f"data.cache=false") from None
        if on_bad_image == "error" and cache.bad:  # a cache built with 'skip' reused under 'error'
            path, reason = cache.bad[0]
            raise BadImageError(f"{path}: {reason} ({len(cache.bad)} bad image(s); data.on_bad_image=skip drops them)")
        return cache

    @classmethod
    def _load(cls, data_file: Path, meta_file: Path, paths: list[str], height: int, width: int):
        try:
            meta = json.loads(meta_file.read_text())
            size = data_file.stat().st_size
        except (OSError, ValueError):
            return None
        complete = (meta.get("version") == FORMAT_VERSION and meta.get("paths") == paths
                    and (meta.get("height"), meta.get("width")) == (height, width)
                    and size == len(paths) * height * width * 3)
        if not complete:
            return None
        return cls(file=str(data_file), paths=paths, height=height, width=width,
                   valid=np.asarray(meta["valid"], dtype=bool), bad=[tuple(b) for b in meta["bad"]], reused=True)

    # ------------------------------------------------------------------------------------------- access
    @property
    def array(self) -> np.memmap:
        if self._array is None:  # opened lazily so a pickled copy opens its own map in the worker process
            self._array = np.memmap(self.file, dtype=np.uint8, mode="r",
                                    shape=(self.n_file, self.height, self.width, 3))
        return self._array

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.array[self.rows[i]]

    def read(self, i: int) -> np.ndarray:
        """Row i as a new, writable H x W x 3 uint8 array, read from the file without mapping it."""
        row = int(self.rows[i])
        if not hasattr(os, "preadv"):   # Windows
            return np.array(self.array[row])
        out = np.empty((self.height, self.width, 3), dtype=np.uint8)
        if self._fd is None:
            self._fd = os.open(self.file, os.O_RDONLY)
        # pread takes its own offset: a descriptor inherited by forked loader workers is safe to share
        got = os.preadv(self._fd, [out], row * out.nbytes)
        if got != out.nbytes:
            raise OSError(f"{self.file}: short read of row {row} ({got} of {out.nbytes} bytes); the cache file was "
                          f"changed while in use: delete it to have it rebuilt")
        return out

    def __del__(self) -> None:
        fd, self._fd = getattr(self, "_fd", None), None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def subset(self, indices) -> "ImageCache":
        """A cache over some of these rows (a fold, or the valid images), sharing the same file."""
        rows = self.rows[np.asarray(indices, dtype=np.int64)]
        return ImageCache(file=self.file, paths=self._file_paths, height=self.height, width=self.width,
                          valid=self._file_valid, bad=self.bad, rows=rows, reused=self.reused)

    def __getstate__(self) -> dict:
        # file name, shape, row map and valid flags only: cheap to send to every worker each epoch
        state = self.__dict__.copy()
        state.update(_array=None, _fd=None, _file_paths=None, bad=[])
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return (f"ImageCache({len(self)} x {self.height}x{self.width}x3, {int((~self.valid).sum())} invalid, "
                f"file={self.file!r})")


def cache_key(paths: list[str], *, height: int, width: int, crop: Cropper | None = None) -> str:
    # without a crop the key is what it was before crops existed: old caches stay valid
    tag = "" if crop is None else f":{crop.tag}"
    digest = hashlib.sha1(f"v{FORMAT_VERSION}:{height}x{width}{tag}\n".encode())
    for path in paths:
        try:
            st = os.stat(path)
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        digest.update(f"{path}\0{stamp}\n".encode())
    return digest.hexdigest()


def _decode_all(paths: list[str], height: int, width: int, data_file: Path, on_bad_image: str, workers: int,
                progress: Callable[[int, int], None] | None,
                crop: Cropper | None = None) -> tuple[np.ndarray, list[tuple[str, str]]]:
    n = len(paths)
    valid = np.ones(n, dtype=bool)
    bad: list[tuple[str, str]] = []
    # the temp file is locked while we build: a later build deletes only temp files whose builder died
    with atomic_write(data_file, "wb") as f:
        # reserve every byte now: a full disk is an error here, not a SIGBUS when a mapped page is first written
        size = n * height * width * 3
        if hasattr(os, "posix_fallocate"):
            os.posix_fallocate(f.fileno(), 0, size)
        else:
            os.ftruncate(f.fileno(), size)
        # rows go straight from the decoder into the map: memory stays one image per worker, whatever N is
        array = np.memmap(f, dtype=np.uint8, mode="r+", shape=(n, height, width, 3))

        def decode(i: int) -> str | None:
            try:
                # crop None: the whole photo. noqa: pyflakes calls `array` undefined for the `del array` below,
                # which runs only after the pool has finished every decode
                array[i] = read_pixels(paths[i], height, width, crop, i)  # noqa: F821
            except BadImageError as err:
                return str(err)
            return None

        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # cv2 releases the GIL while decoding
            for done, (i, error) in enumerate(zip(range(n), pool.map(decode, range(n))), start=1):
                if error is not None:
                    if on_bad_image == "error":
                        pool.shutdown(wait=True, cancel_futures=True)
                        raise BadImageError(error)
                    valid[i] = False
                    bad.append((paths[i], error.removeprefix(f"{paths[i]}: ")))   # the path is kept beside it
                if progress is not None and (done % 64 == 0 or done == n):
                    progress(done, n)
        if not valid.any():   # not worth keeping: a cache of nothing but skipped rows
            path, reason = bad[0]
            raise BadImageError(f"none of the {n} images is readable (data.on_bad_image=skip left nothing to "
                                f"train on), e.g. {path}: {reason}")
        array.flush()
        del array
    return valid, bad


def remove_abandoned_builds(cache_dir: Path) -> None:
    """Delete temp files of builds that were killed (often as large as the cache); a live build holds its lock."""
    for tmp in cache_dir.glob("*.tmp"):
        try:
            fd = os.open(tmp, os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            tmp.unlink()
        except OSError:   # locked: another process is building it right now
            pass
        finally:
            os.close(fd)

