"""What `predict` (and `export`'s parity check) runs on: the images named by --data, with any labels they carry.

    inputs = read_inputs("data/synthetic", heads)       # the competition eval layout: ImageID, info.csv order
    inputs = read_inputs("photos.csv", heads)           # a manifest: path + optional head columns (its truth)
    inputs = read_inputs("photos/", heads)              # a folder of images, recursively, hidden files skipped
    truth = manifest_truth(inputs, heads, composite)    # a labelled manifest scores like --gt (None: unlabelled)
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..heads import HeadSpec, years_source
from ..utils.errors import UserError
from .competition import read_eval
from .ground_truth import ANS, GroundTruth, truth_from_rows
from .manifest import read_manifest

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


@dataclass
class Inputs:
    frame: pd.DataFrame   # image_id, path, then metadata columns
    id_column: str        # submission's id column: ImageID for the competition layout, else image_id
    manifest: Path | None = None   # the manifest CSV the images came from (its head columns are truth)


def read_inputs(data, heads: dict[str, HeadSpec]) -> Inputs:
    """--data: the competition eval layout (ROOT, ROOT/eval or its info.csv), a manifest CSV, or a folder of images;
    a `source` column names where each image came from (a manifest's own, else the --data folder's or file's name),
    as oof.csv's names the training source."""
    inputs = _read_inputs(data, heads)
    if "source" not in inputs.frame.columns:
        inputs.frame["source"] = Path(data).expanduser().stem or str(data)
    return inputs


def _read_inputs(data, heads: dict[str, HeadSpec]) -> Inputs:
    path = Path(data).expanduser()
    if not path.exists():
        raise UserError(f"--data {data}: not found; expected a competition root / eval folder, a manifest CSV or "
                        f"a folder of images")
    if path.is_file() and path.name == "info.csv":
        path = path.parent
    if path.is_dir() and ((path / "info.csv").is_file() or (path / "eval" / "info.csv").is_file()):
        frame = read_eval(path)
        return Inputs(frame=pd.DataFrame({"image_id": frame["ImageID"], "path": frame["path"]}), id_column="ImageID")
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise UserError(f"--data {data}: a file must be a manifest CSV (path + optional head columns)")
        frame = read_manifest(path, heads)
        _check_unique(path, frame["path"])
        base = path.resolve().parent
        ids = [Path(p).relative_to(base).as_posix() if Path(p).is_relative_to(base) else p for p in frame["path"]]
        if "image_id" in frame.columns:   # its own ids (a predictions.csv read back) name the images
            own = frame.pop("image_id").map(_id_text)
            ids = own.where(own != "", pd.Series(ids)).tolist()
            _check_unique(path, pd.Series(ids), what="image_id")
        return Inputs(frame=pd.concat([pd.DataFrame({"image_id": ids}), frame], axis=1), id_column="image_id",
                      manifest=path)
    files = folder_images(path)
    if not files:
        raise UserError(f"--data {data}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))} in any "
                        f"case, recursively, hidden files skipped)")
    return Inputs(frame=pd.DataFrame({"image_id": [f.relative_to(path).as_posix() for f in files],
                                      "path": [os.path.abspath(f) for f in files]}), id_column="image_id")


def _check_unique(manifest: Path, values: pd.Series, what: str = "image") -> None:
    """Each image once: a path (or id) listed twice would be predicted twice and its rows of the table collide."""
    repeated = values.duplicated()
    if repeated.any():
        line = int(np.argmax(repeated.to_numpy()))
        first = int(np.argmax((values == values.iloc[line]).to_numpy()))
        raise UserError(f"{manifest} line {line + 2}: {what} {values.iloc[line]} is listed again (first at line "
                        f"{first + 2}); list each image once")


def _id_text(value) -> str:
    """An image_id cell as text: blank stays blank, a number read as 7.0 is 7 again."""
    if isinstance(value, float):
        return "" if np.isnan(value) else str(int(value)) if value.is_integer() else str(value)
    return str(value).strip()


def manifest_truth(inputs: Inputs, heads: list[HeadSpec], composite: list[HeadSpec]) -> GroundTruth | None:
    """A manifest's own labels as truth (scored like --gt), or None when it labels nothing."""
    if inputs.manifest is None:
        return None
    frame = inputs.frame
    labels = {ANS} | {h.source for h in heads} | {years_source(h) for h in heads if not h.derive}
    if not labels & set(frame.columns):
        return None   # paths alone: unlabelled images, predicted and not scored
    rows = pd.DataFrame(index=frame.index)
    for head in heads:
        if not head.derive and head.source in frame.columns:
            rows[head.name] = frame[head.source]
    for column in frame.columns:
        if column not in rows.columns and column not in ("image_id", "path"):
            rows[column] = frame[column]
    rows = rows.astype(object).where(rows.notna(), "").astype(str)
    truth = truth_from_rows(rows, [str(i) for i in frame["image_id"]], heads, composite,
                            where=f"--data {inputs.manifest}", path=inputs.manifest)
    labelled = any(np.any(t >= 0) for t in truth.targets.values())
    return truth if labelled else None


def folder_images(root: Path) -> list[Path]:
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(folder) / f for f in files if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_SUFFIXES]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())
