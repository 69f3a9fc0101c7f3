"""Run directories: every file name a run (or an export, or a predict output) uses, and where to find things in them.

    runs/<name>/<n>/            make_run_dir: n one more than the largest existing number, never reused
      config.yaml               the resolved config (CONFIG)
      last.pt, best.pt          the newest state (resume) and the best epoch's weights (inference)
      oof.csv                   out-of-fold predictions of the best epoch (OOF)
      decisions.json            tuned class offsets (DECISIONS)
      metrics.csv, tb/, wandb/  tracking (METRICS, TENSORBOARD, WANDB)
      crops.csv                 data.crop=face: the box each training photo was cut from (CROPS)
      teacher.csv               train.distill: the teacher's predictions on the validation rows (TEACHER)
      fold0/, fold1/, ...       a k-fold run: one run dir per fold (fold_run_dir), oof.csv merged in the parent

    find_checkpoint(run_dir)               # best.pt, else last.pt: what predict and export read
    find_checkpoint(run_dir, want="last")  # last.pt only: what a resume continues
    resolve_checkpoints(["runs/kfold/1"])  # every fold's; files and export folders stay as they are
    resolve_resume("runs/quickstart/3")    # the last.pt to continue, or one line saying why there is none
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Literal

import pandas as pd

from ..config import Config
from ..utils.errors import UserError
from ..utils.io import write_csv
from ..utils.parsing import whole_number

CONFIG, METRICS, OOF, DECISIONS, CROPS = "config.yaml", "metrics.csv", "oof.csv", "decisions.json", "crops.csv"
LAST, BEST = "last.pt", "best.pt"
TEACHER = "teacher.csv"
LOCK = ".lock"   # runs/locks.py: one training process per run dir
TENSORBOARD, WANDB = "tb", "wandb"
# a safetensors export folder (export/safetensors.py), which predict takes as one model
EXPORT_WEIGHTS, EXPORT_CONFIG = "model.safetensors", "config.json"
# predict's output folder
SUBMISSION, PREDICTIONS, SCORES = "submission.csv", "predictions.csv", "scores.json"
FOLD_DIR = re.compile(r"fold([0-9]+)")   # the names fold_run_dir gives


# ----------------------------------------------------------------------------------------------- making
def run_base(cfg: Config) -> Path:
    """runs/<name>: the folder a config's numbered run dirs go in."""
    return Path(cfg.output_dir) / cfg.name


def missing_folders(path: Path) -> list[Path]:
    """`path` and those of its parents that do not exist yet, deepest first: what creating `path` makes."""
    out, path = [], Path(path).absolute()
    while not path.exists() and path != path.parent:
        out.append(path)
        path = path.parent
    return out


def make_run_dir(cfg: Config) -> Path:
    """runs/<name>/<n> with n one more than the largest existing number (never reuses a folder)."""
    base = run_base(cfg)
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"output_dir: cannot create {base}: {err.strerror}") from None
    numbers = [int(p.name) for p in base.iterdir() if p.is_dir() and whole_number(p.name) is not None]
    n = max(numbers, default=0) + 1
    while True:
        run_dir = base / str(n)
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:  # another process took it between listing and mkdir
            n += 1
        except OSError as err:
            raise UserError(f"output_dir: cannot create the run dir {run_dir}: {err.strerror}; make {base} writable "
                            f"or set output_dir to another folder") from None


def check_writable(run_dir: Path) -> None:
    """Create `run_dir` and a file in it, or say in one line why not: now, rather than at the first save."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", suffix=".tmp", dir=run_dir)
        os.close(fd)
        os.remove(probe)
    except OSError as err:
        raise not_writable(run_dir, err) from None


def not_writable(run_dir: Path, err: OSError) -> UserError:
    return UserError(f"run dir {run_dir} is not writable ({err.strerror}); make it writable or set output_dir to "
                     f"another folder")


def discard_unsaved(run_dir: Path, made: tuple[Path, ...] | list[Path] = ()) -> None:
    """Bad input found before the first checkpoint: leave no half-made run dir (config.yaml, empty logs) behind, nor
    the folders above it that this run made (`made`, deepest first: runs/<name>/, runs/) while they are empty; one
    another run has started in meanwhile stays."""
    if run_dir.is_dir() and not any(run_dir.rglob("*.pt")):
        shutil.rmtree(run_dir, ignore_errors=True)
        for folder in made:
            try:
                folder.rmdir()
            except OSError:   # not empty (another run's), or gone already
                break


def remove_stale_temp_files(run_dir: Path) -> list[str]:
    """Half-written checkpoints / tables a killed save left behind (`.last.pt.x1y2.tmp`): never read, only in the
    way. Called on resume, when no other process writes into this run dir."""
    removed = []
    for tmp in run_dir.glob(".*.tmp"):
        try:
            tmp.unlink()
            removed.append(tmp.name)
        except OSError:
            pass
    return removed


# ----------------------------------------------------------------------------------------------- k folds
def fold_run_dir(parent: Path, fold: int) -> Path:
    """Where fold `fold` of a k-fold run lives: parent/fold<k>. The one place that names fold folders."""
    return Path(parent) / f"fold{fold}"


def fold_dirs(parent: Path) -> list[Path]:
    """fold0/, fold1/, ... of a k-fold run dir, in fold order."""
    found = [d for d in Path(parent).iterdir() if d.is_dir() and FOLD_DIR.fullmatch(d.name)]
    return sorted(found, key=lambda d: int(FOLD_DIR.fullmatch(d.name).group(1)))


def kfold_parent(run_dir: Path) -> Path | None:
    """The k-fold run dir a fold's run dir belongs to, or None for an ordinary run dir."""
    run_dir = Path(run_dir)
    return run_dir.parent if FOLD_DIR.fullmatch(run_dir.name) else None


def merge_fold_oof(parent: Path, n_folds: int) -> Path | None:
    """One oof.csv over every fold of a k-fold run (each image predicted by the model that did not train on it).

    Read and written as text, so ids like 000123 and every number stay exactly as the folds wrote them."""
    files = [fold_run_dir(parent, k) / OOF for k in range(n_folds)]
    parts = [pd.read_csv(f, dtype=str, keep_default_na=False) for f in files if f.is_file()]
    if not parts:
        return None
    return write_csv(pd.concat(parts, ignore_index=True), parent / OOF)


# ----------------------------------------------------------------------------------------------- finding
def find_checkpoint(folder: Path, *, want: Literal["best", "last"] = "best") -> Path | None:
    """The checkpoint of one run dir: best.pt, else last.pt (what inference reads: a run that crashed before its
    first improvement still has its last state); with want="last", last.pt only (what a resume continues)."""
    names = (BEST, LAST) if want == "best" else (LAST,)
    return next((Path(folder) / n for n in names if (Path(folder) / n).is_file()), None)


def is_export_folder(path: Path) -> bool:
    return (Path(path) / EXPORT_WEIGHTS).is_file() or (Path(path) / EXPORT_CONFIG).is_file()


def resolve_checkpoints(items: list[str]) -> list[Path]:
    """Files stay; a run dir gives best.pt (else last.pt); a k-fold parent gives every fold's checkpoint; a
    safetensors export folder (model.safetensors / config.json) stays. Each path once, in the order given."""
    found: list[Path] = []
    for item in items:
        path = Path(item).expanduser()
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            found.extend(_folder_checkpoints(path))
        else:
            raise UserError(f"checkpoint not found: {item} (expected a .pt or .onnx file, a run dir, a k-fold run dir "
                            "or a safetensors export folder)")
    return list(dict.fromkeys(p.resolve() for p in found))


def _folder_checkpoints(path: Path) -> list[Path]:
    if is_export_folder(path):
        return [path]
    own = find_checkpoint(path)
    if own is not None:
        return [own]
    folds = fold_dirs(path)
    if not folds:
        raise UserError(f"{path}: no checkpoint found (expected {BEST} or {LAST}, or fold0/, fold1/, ... "
                        f"sub-folders each with {BEST})")
    picked = [(d, find_checkpoint(d)) for d in folds]
    empty = [d.name for d, p in picked if p is None]
    if empty:
        raise UserError(f"{path}: k-fold folders without {BEST}/{LAST}: {', '.join(empty)}; "
                        "finish their training or pass the other folds' checkpoints one by one")
    return [p for _, p in picked]


def resolve_resume(item: str | Path, *, any_fold: bool = False) -> Path:
    """A checkpoint file, or a run dir's last.pt (the newest state, not the best). `any_fold`: a k-fold run dir
    gives its first fold's last.pt (the config every fold shares, for `--resume X --folds all`)."""
    path = Path(item)
    if path.is_dir():
        own = find_checkpoint(path, want="last")
        if own is not None:
            return own
        folds = fold_dirs(path)
        started = [p for p in (find_checkpoint(d, want="last") for d in folds) if p is not None]
        if any_fold and started:
            return started[0]
        if folds:
            raise UserError(f"--resume {path}: a k-fold run dir; add --folds all to resume every fold, or resume one "
                            f"fold with --resume {folds[0]}")
        if (path / CONFIG).is_file():
            raise UserError(f"--resume {path}: no checkpoint yet (the run stopped before its first epoch ended; "
                            f"train.save_every_steps saves within epochs); start it again without --resume")
        raise UserError(f"--resume {path}: no {LAST} in this folder (is it a run dir?)")
    if not path.is_file():
        raise UserError(f"--resume {path}: no such file or run dir")
    return path


def find_decisions(checkpoint: str | Path) -> Path | None:
    """The decisions.json that goes with a checkpoint: in its run dir, else (a fold of a k-fold run) in the k-fold
    run dir, whose decisions were fitted on every fold's OOF together."""
    folder = Path(checkpoint).parent
    parent = kfold_parent(folder)
    for candidate in (folder / DECISIONS, parent / DECISIONS if parent is not None else None):
        if candidate is not None and candidate.is_file():
            return candidate
    return None
