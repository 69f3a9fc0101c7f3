"""predict's output folder as one transaction: its files are always those of one whole, successful predict.

    check_out("out/", {"--data": "data/eval.csv", "--ckpt": "runs/a/1/best.pt"})   # before any work
    out = make_out_dir("out/")
    with staged(out) as stage:               # every output is written to `stage` first
        write_csv(table, stage / PREDICTIONS)
        commit(stage, out, record)           # moved into place; the kinds this predict did not write removed

A failed predict (a bad image, a full disk, Ctrl-C) leaves the previous outputs as they were; a predict without a
composite or without truth removes the previous run's submission.csv / scores.json, which would otherwise sit beside
new predictions naming another checkpoint. predict.json records what made the files beside it.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from ..runs.run_dir import PREDICTIONS, SCORES, SUBMISSION
from ..utils.errors import UserError
from ..utils.io import write_json

RECORD = "predict.json"
KINDS = (SUBMISSION, PREDICTIONS, SCORES, RECORD)   # what one predict owns in its --out


def check_out(out, inputs: dict[str, list]) -> None:
    """UserError when --out is, or holds, one of the inputs ({flag: paths}): its outputs would replace them."""
    where = Path(out).expanduser().resolve()
    for flag, paths in inputs.items():
        for path in paths:
            resolved = Path(path).expanduser().resolve()
            if resolved == where or resolved.is_relative_to(where):
                verb = "is" if resolved == where else "holds"
                raise UserError(f"--out {out}: {verb} the input {flag} {path}; predict replaces the files in --out, "
                                f"so give an output folder that holds none of its inputs")


def make_out_dir(out) -> Path:
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"--out {out}: exists and is not a folder; give a folder for the outputs") from None
    except OSError as err:
        raise UserError(f"--out {out}: cannot create the folder ({err.strerror})") from None
    return out


@contextlib.contextmanager
def staged(out: Path):
    """A hidden scratch folder for this predict's outputs, removed however the predict ends. It lies inside --out,
    not beside it: the same file system (so each move is a rename), and --out's parent need not be writable.
    A scratch folder left by a killed predict is removed first (two predicts into one --out would replace each
    other's files anyway)."""
    for left in out.glob(".predict-*.tmp"):
        shutil.rmtree(left, ignore_errors=True)
    try:
        stage = Path(tempfile.mkdtemp(prefix=".predict-", suffix=".tmp", dir=out))
    except OSError as err:
        raise UserError(f"--out {out}: cannot write there ({err.strerror}); make it writable or give another "
                        f"folder") from None
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def commit(stage: Path, out: Path, record: dict) -> list[str]:
    """Move the staged outputs into `out`, remove its outputs of the kinds this predict did not write, and write
    the record (RECORD) last: a folder with a record names exactly the files one predict made. Returns the names."""
    written = sorted(p.name for p in stage.iterdir() if p.name in KINDS)
    try:
        for name in KINDS:
            if name not in written:
                (out / name).unlink(missing_ok=True)
        for name in written:
            os.replace(stage / name, out / name)
        write_json(out / RECORD, {**record, "outputs": written + [RECORD]}, what="predict record")
    except OSError as err:
        raise UserError(f"--out {out}: cannot move the outputs into place ({err.strerror}); rerun the "
                        f"predict") from None
    return written
