"""decisions.json, the tuned class offsets of a run: its format, the one reader and the writer.

    doc = read(path)                                     # checked: {"offsets": {head: {class: number}}, ...}
    offsets = for_heads(doc, heads, where=str(path))     # {head: (C,) array} in each head's class order
    write(run_dir, doc)                                  # fit.py fits the document

A document that is not `applied` (the guard refused its fit) gives no offsets: the plain argmax.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..heads import HeadSpec
from ..runs.run_dir import DECISIONS
from ..utils.errors import UserError
from ..utils.io import read_json, write_json

FORMAT, VERSION = "multitask-decisions", 1
MODES = ("auto", "off")


def read(path: str | Path) -> dict:
    """A decisions document from a file, checked for shape (read_doc); one UserError line naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--decisions {path}: file not found; give a decisions.json (written by `multitask "
                        f"tune-decisions` or `train`), auto or off")
    raw = read_json(path, hint="refit it with `multitask tune-decisions RUN_DIR`")
    doc = check_doc(raw, where=str(path))
    doc.setdefault("path", str(path.resolve()))
    return doc


def check_doc(raw, *, where: str, heads: Sequence[HeadSpec] | None = None) -> dict:
    """`raw` as a decisions document: {"offsets": {head: {class: number}}, "applied": bool, ...}; with `heads`, every
    head and class named must be one of theirs. One UserError line naming `where` otherwise."""
    if not isinstance(raw, dict) or not isinstance(raw.get("offsets"), dict):
        raise UserError(f"{where}: expected a JSON object with \"offsets\": {{head: {{class: number}}}}")
    if "applied" in raw and not isinstance(raw["applied"], bool):
        raise UserError(f"{where}: \"applied\" must be true or false, got {raw['applied']!r}")
    known = {h.name: h for h in heads} if heads is not None else None
    for head, values in raw["offsets"].items():
        if known is not None and head not in known:
            raise UserError(f"{where}: offsets for unknown head {head!r}; the model's heads are {', '.join(known)}")
        if not isinstance(values, dict):
            raise UserError(f"{where}: offsets.{head} must map class names to numbers, got {values!r}")
        for cls, value in values.items():
            if known is not None and cls not in known[head].classes:
                raise UserError(f"{where}: offsets.{head}: unknown class {cls!r}; head {head} has the classes "
                                f"{', '.join(known[head].classes)}")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise UserError(f"{where}: offsets.{head}.{cls} = {value!r} is not a finite number")
    return dict(raw)


def for_heads(doc: Mapping | None, heads: Sequence[HeadSpec], *, where: str) -> dict[str, np.ndarray]:
    """The offsets a document applies to `heads`, in each head's class order (a class it leaves out: 0)."""
    if not doc:
        return {}
    check_doc(doc, where=where, heads=heads)
    if doc.get("applied") is False:
        return {}
    by_name = {h.name: h for h in heads}
    return {name: np.array([float(values.get(c, 0.0)) for c in by_name[name].classes])
            for name, values in doc["offsets"].items() if any(values.values())}


def write(run_dir: str | Path, doc: dict) -> Path:
    return write_json(Path(run_dir) / DECISIONS, doc, what="decisions")


def named(offsets: Mapping[str, np.ndarray], heads: Sequence[HeadSpec], *, zeros: bool = False) -> dict:
    """{head: {class: offset}} for JSON; with zeros, every head (zeros where none were kept)."""
    return {h.name: {c: round(float(v), 6) for c, v in zip(h.classes, offsets.get(h.name, np.zeros(h.num_classes)))}
            for h in heads if zeros or h.name in offsets}
