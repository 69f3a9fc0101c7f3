"""Run directories: runs/<name>/<n>/ (auto-increment), resume targets, k-fold parents."""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from .config import Config
from .errors import UserError
from .predictions import write_table


def make_run_dir(cfg: Config) -> Path:
    """runs/<name>/<n> with n one more than the largest existing number (never reuses a folder)."""
    base = Path(cfg.output_dir) / cfg.name
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"output_dir: cannot create {base}: {err.strerror}") from None
    numbers = [int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit()]
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
        raise UserError(f"run dir {run_dir} is not writable ({err.strerror}); make it writable or set output_dir to "
                        f"another folder") from None


def discard_unsaved(run_dir: Path) -> None:
    """Bad input found before the first checkpoint: leave no half-made run dir (config.yaml, empty logs) behind."""
    if run_dir.is_dir() and not any(run_dir.rglob("*.pt")):
        shutil.rmtree(run_dir, ignore_errors=True)


def resolve_resume(item: str | Path) -> Path:
    """A checkpoint file, or a run dir (its last.pt: the newest state, not the best)."""
    path = Path(item)
    if path.is_dir():
        if (path / "last.pt").is_file():
            return path / "last.pt"
        if fold_dirs(path):
            raise UserError(f"--resume {path}: a k-fold run dir; add --folds all to resume every fold, or resume one "
                            f"fold with --resume {fold_dirs(path)[0]}")
        if (path / "config.yaml").is_file():
            raise UserError(f"--resume {path}: no checkpoint yet (the run stopped before its first epoch ended; "
                            f"train.save_every_steps saves within epochs); start it again without --resume")
        raise UserError(f"--resume {path}: no last.pt in this folder (is it a run dir?)")
    if not path.is_file():
        raise UserError(f"--resume {path}: no such file or run dir")
    return path


def fold_run_dir(parent: Path, fold: int) -> Path:
    """Where fold `fold` of a k-fold run lives: parent/fold<k>. The one place that names fold folders."""
    return Path(parent) / f"fold{fold}"


FOLD_DIR = re.compile(r"fold(\d+)")   # the names fold_run_dir gives


def fold_dirs(parent: Path) -> list[Path]:
    """fold0/, fold1/, ... of a k-fold run dir, in fold order."""
    found = [d for d in Path(parent).iterdir() if d.is_dir() and FOLD_DIR.fullmatch(d.name)]
    return sorted(found, key=lambda d: int(FOLD_DIR.fullmatch(d.name).group(1)))


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


def check_resume_heads(ckpt: dict, cfg: Config, path: Path) -> None:
    if "optimizer" not in ckpt:
        raise UserError(f"--resume {path}: this checkpoint holds weights only (best.pt); resume from last.pt or the "
                        f"run dir")
    saved = {name: ckpt["config"]["heads"][name]["classes"] for name in ckpt["trained_heads"]}
    wanted = {h.name: list(h.classes) for h in cfg.trained_heads()}
    if saved != wanted:
        raise UserError(f"--resume {path}: the checkpoint's heads {saved} differ from the config's {wanted}; "
                        f"resume with the same heads (or start a new run)")
    if ckpt["config"]["model"]["backbone"] != cfg.model.backbone:
        raise UserError(f"--resume {path}: checkpoint backbone {ckpt['config']['model']['backbone']} != config "
                        f"model.backbone {cfg.model.backbone}")


def merge_fold_oof(parent: Path, n_folds: int) -> Path | None:
    """One oof.csv over every fold of a k-fold run (each image predicted by the model that did not train on it).

    Read and written as text, so ids like 000123 and every number stay exactly as the folds wrote them."""
    files = [fold_run_dir(parent, k) / "oof.csv" for k in range(n_folds)]
    parts = [pd.read_csv(f, dtype=str, keep_default_na=False) for f in files if f.is_file()]
    if not parts:
        return None
    return write_table(pd.concat(parts, ignore_index=True), parent / "oof.csv")
