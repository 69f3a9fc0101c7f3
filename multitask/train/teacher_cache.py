"""A teacher member's probabilities, stored per image so a rerun, a resume or another student computes none twice.

    cache = MemberCache.open(cache_dir, member_digest="ab12...", setting="identity,hflip|mean|bf16|cpu",
                             widths={"mask": 3, "age": 3, "age/years": 101}, log=print)
    todo = cache.missing(paths)                     # the paths whose probabilities are not stored yet
    cache.add(todo, run_members([member], todo, ...)[0])   # then written atomically
    probs = cache.get(paths)                        # {output: (N, C)} in the order of `paths`

One file per (checkpoint digest, views + merge + precision + device type): `<cache_dir>/teachers/<key>.npz`. An
image is keyed by its resolved path, size and modification time, so an edited photo is computed again. The digest
is of the checkpoint's bytes: a retrained checkpoint at the same path gets a new file.

A stored file is trusted only whole: every output the member gives at its width, one row per key, probabilities
(finite, in [0, 1], each row summing to 1). A file that is not (truncated, emptied, edited, from another member
under a colliding name) is computed again, not trusted, and the run says so in one line naming it.
"""
from __future__ import annotations

import hashlib
import io
import os
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

from ..data.faces import content_key
from ..utils.io import write_bytes

KEYS = "__keys__"
SUM_TOLERANCE = 1e-3   # float32 rows of a softmax (or a mean of them) sum to 1 within ~1e-6; a damaged one does not


def image_key(path: str | os.PathLike) -> str:
    return content_key(os.path.realpath(path))   # the face-box store's key: path, size, mtime


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a checkpoint's bytes (a safetensors export folder: of its weights file)."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class MemberCache:
    def __init__(self, path: Path, rows: dict[str, int], arrays: dict[str, np.ndarray]):
        self.path, self.rows, self.arrays = path, rows, arrays
        self.computed = 0   # images added by this process (the rest came from the file)

    @classmethod
    def open(cls, cache_dir: str | os.PathLike, *, member_digest: str, setting: str, widths: dict[str, int],
             log: Callable[[str], None] = print) -> "MemberCache":
        """The member's stored probabilities; `widths` ({output: classes}) is what the member gives, so a file
        holding anything else is damaged: then it starts empty (computed again) and `log` gets one line."""
        key = hashlib.sha256(f"{member_digest}\n{setting}".encode()).hexdigest()[:24]
        path = Path(cache_dir) / "teachers" / f"{key}.npz"
        rows, arrays = {}, {}
        if path.is_file():
            try:
                rows, arrays = read_checked(path, widths)
            except DamagedCache as err:   # a damaged file is computed again, not trusted
                log(f"warning: teacher cache {path} is damaged ({err}): computing its probabilities again")
                rows, arrays = {}, {}
        return cls(path, rows, arrays)

    def missing(self, paths: list[str]) -> list[str]:
        return [p for p in paths if image_key(p) not in self.rows]

    def add(self, paths: list[str], probs: dict[str, np.ndarray]) -> None:
        """Store `probs` ({output: (len(paths), C)}) for `paths` and write the file; DamagedCache (nothing stored)
        when they are not probabilities (a member whose weights give NaN)."""
        if not paths:
            return
        for name, values in probs.items():
            check_probabilities(name, np.asarray(values, dtype=np.float32))
        start = len(self.rows)
        for i, p in enumerate(paths):
            self.rows[image_key(p)] = start + i
        for name, values in probs.items():
            values = np.asarray(values, dtype=np.float32)
            self.arrays[name] = values if name not in self.arrays else np.concatenate([self.arrays[name], values])
        self.computed += len(paths)
        buffer = io.BytesIO()
        np.savez(buffer, **{KEYS: np.array(list(self.rows), dtype=str)}, **self.arrays)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(self.path, buffer.getvalue(), what="teacher cache")

    def get(self, paths: list[str]) -> dict[str, np.ndarray]:
        index = np.array([self.rows[image_key(p)] for p in paths], dtype=np.int64)
        return {name: values[index] for name, values in self.arrays.items()}


class DamagedCache(Exception):
    """A stored file that is not what this module writes (its text says what is wrong)."""


def read_checked(path: Path, widths: dict[str, int]) -> tuple[dict[str, int], dict[str, np.ndarray]]:
    """({key: row}, {output: (rows, width)}) of a stored file, or DamagedCache saying why it cannot be trusted."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            names = set(stored.files)
            if KEYS not in names:
                raise DamagedCache("no image keys")
            keys = stored[KEYS]
            arrays = {name: stored[name] for name in names - {KEYS}}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile) as err:
        raise DamagedCache(f"unreadable: {type(err).__name__}") from None
    if keys.ndim != 1 or keys.dtype.kind != "U" or len(np.unique(keys)) != len(keys):
        raise DamagedCache("its image keys are not a list of distinct names")
    keys = keys.tolist()
    if set(arrays) != set(widths):
        raise DamagedCache(f"outputs {sorted(arrays)}, the member gives {sorted(widths)}")
    for name, values in arrays.items():
        if values.shape != (len(keys), widths[name]):
            raise DamagedCache(f"{name} is {values.shape}, expected ({len(keys)}, {widths[name]})")
        check_probabilities(name, values)
    return {k: i for i, k in enumerate(keys)}, arrays


def check_probabilities(name: str, values: np.ndarray) -> None:
    """DamagedCache unless every row of `values` is a probability distribution."""
    if not np.issubdtype(values.dtype, np.floating):
        raise DamagedCache(f"{name} holds {values.dtype}, not probabilities")
    if not np.isfinite(values).all():
        raise DamagedCache(f"{name} holds non-finite values")
    if values.size and (values.min() < 0 or values.max() > 1):
        raise DamagedCache(f"{name} holds values outside [0, 1]")
    if values.size and np.abs(values.sum(1, dtype=np.float64) - 1).max() > SUM_TOLERANCE:
        raise DamagedCache(f"{name} has rows that do not sum to 1")
