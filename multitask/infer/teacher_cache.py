"""A teacher member's probabilities, stored per image so a rerun, a resume or another student computes none twice.

    cache = MemberCache.open(cache_dir, member_digest="ab12...", setting="identity,hflip|mean|bf16|cpu")
    todo = cache.missing(paths)                     # the paths whose probabilities are not stored yet
    cache.add(todo, run_members([member], todo, ...)[0])   # then written atomically
    probs = cache.get(paths)                        # {output: (N, C)} in the order of `paths`

One file per (checkpoint digest, views + merge + precision + device type): `<cache_dir>/teachers/<key>.npz`. An
image is keyed by its resolved path, size and modification time, so an edited photo is computed again. The digest
is of the checkpoint's bytes: a retrained checkpoint at the same path gets a new file.
"""
from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np

from ..data.faces import content_key
from ..utils.io import write_bytes

KEYS = "__keys__"


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
    def open(cls, cache_dir: str | os.PathLike, *, member_digest: str, setting: str) -> "MemberCache":
        key = hashlib.sha256(f"{member_digest}\n{setting}".encode()).hexdigest()[:24]
        path = Path(cache_dir) / "teachers" / f"{key}.npz"
        rows, arrays = {}, {}
        if path.is_file():
            try:
                with np.load(path, allow_pickle=False) as stored:
                    arrays = {name: stored[name] for name in stored.files if name != KEYS}
                    rows = {k: i for i, k in enumerate(stored[KEYS].tolist())}
            except (OSError, ValueError, KeyError):   # a damaged file is computed again, not trusted
                rows, arrays = {}, {}
        return cls(path, rows, arrays)

    def missing(self, paths: list[str]) -> list[str]:
        return [p for p in paths if image_key(p) not in self.rows]

    def add(self, paths: list[str], probs: dict[str, np.ndarray]) -> None:
        """Store `probs` ({output: (len(paths), C)}) for `paths` and write the file."""
        if not paths:
            return
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
