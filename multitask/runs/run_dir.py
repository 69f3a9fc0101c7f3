"""Run directories: runs/<name>/<n>/ (auto-increment), resume targets and what may change on resume, k-fold
parents, and the lock that keeps a second training process out of a run dir."""
from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from ..config import Config, from_dict, to_dict
from ..metrics.table import write_table
from ..utils.errors import UserError
from ..utils.parsing import whole_number


def make_run_dir(cfg: Config) -> Path:
    """runs/<name>/<n> with n one more than the largest existing number (never reuses a folder)."""
    base = Path(cfg.output_dir) / cfg.name
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


FOLD_DIR = re.compile(r"fold([0-9]+)")   # the names fold_run_dir gives


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


# ----------------------------------------------------------------------------------------------- resume overrides
# What may differ from the checkpoint's config on --resume: how long to go on, where and what to log, how to load the
# same data. Anything else (lr, schedule, loss, weighting, augmentation, split, seed, model, ...) would change the
# optimisation half-way while the restored optimizer and scheduler keep the old values, so it is refused.
RESUME_MAY_CHANGE = ("train.epochs", "train.early_stop", "train.max_steps", "train.save_every_steps", "train.device",
                     "train.decisions",
                     "data.num_workers", "data.root", "data.cache", "data.cache_dir", "tracking.*", "name",
                     "output_dir")


def check_resume_overrides(saved: dict, cfg: Config, path: Path) -> None:
    """Refuse a resumed config that differs from the checkpoint's in a key outside RESUME_MAY_CHANGE, so the config
    a run saves is always the one it trains with."""
    before = _flat(to_dict(from_dict(saved, f"--resume {path}")))   # keys added since: defaults
    after = _flat(to_dict(cfg))
    changed = [k for k in sorted(set(before) | set(after)) if k != "config_path" and before.get(k) != after.get(k)
               and not any(k == key or (key.endswith("*") and k.startswith(key[:-1])) for key in RESUME_MAY_CHANGE)]
    if changed:
        key = changed[0]
        more = f" (and {', '.join(changed[1:])})" if len(changed) > 1 else ""
        raise UserError(f"--resume {path}: {key} {before.get(key)!r} -> {after.get(key)!r}{more} would change the "
                        f"optimisation half-way; on resume only {', '.join(RESUME_MAY_CHANGE)} may change; start a "
                        f"new run for this")
    if cfg.train.scheduler == "onecycle" and before["train.epochs"] != cfg.train.epochs:
        raise UserError(f"--resume {path}: train.epochs {before['train.epochs']} -> {cfg.train.epochs}: the onecycle "
                        f"schedule is fixed to the first run's length; start a new run for a longer one")


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


# ----------------------------------------------------------------------------------------------- the run-dir lock
LOCK_NAME = ".lock"


class RunDirLock:
    """One training process per run dir: an exclusive flock on <run dir>/.lock, which holds the owner's pid.

    The kernel drops a flock when its process ends, even by kill -9, so a lock file a dead process left behind is
    simply taken over. A fold dir is locked through its k-fold parent, so `--resume parent --folds all` and
    `--resume parent/fold1` exclude each other."""

    def __init__(self, run_dir: Path):
        run_dir = Path(run_dir)
        self.run_dir = run_dir.parent if FOLD_DIR.fullmatch(run_dir.name) else run_dir
        self.path = self.run_dir / LOCK_NAME
        self.fd: int | None = None

    def acquire(self) -> RunDirLock:
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:
                raise not_writable(self.run_dir, err) from None
            self._lock(fd)
            if _same_file(fd, self.path):
                break
            os.close(fd)   # the owner removed the file while we opened it: lock the one there now
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def _lock(self, fd: int) -> None:
        """Hold `fd`'s lock, or close it and say who holds it."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            owner = _read_pid(fd)
        except OSError as err:   # no flock on this file system: trust the pid in the file
            if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            owner = _read_pid(fd)
            if owner in (None, os.getpid()) or not pid_alive(owner):
                return
        os.close(fd)
        raise UserError(f"run dir {self.run_dir} is in use by another training process (pid {owner or '?'}, lock "
                        f"{self.path}); wait for it to end (or stop it), then run again")

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:   # the run dir was discarded (nothing saved) while locked
            pass
        os.close(self.fd)
        self.fd = None


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def _read_pid(fd: int) -> int | None:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 32).decode("ascii", "replace").strip()
    return whole_number(text)


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this machine."""
    try:
        os.kill(pid, 0)   # PermissionError too means alive (owned by someone else)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True
