"""One training process per run dir: an exclusive lock that a killed process lets go of by itself.

    lock = RunDirLock(run_dir).acquire()   # UserError naming the owner's pid when another process trains there
    ...
    lock.release()
"""
from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from ..utils.errors import UserError
from ..utils.parsing import whole_number
from .run_dir import LOCK, kfold_parent, not_writable


class RunDirLock:
    """One training process per run dir: an exclusive flock on <run dir>/.lock, which holds the owner's pid.

    The kernel drops a flock when its process ends, even by kill -9, so a lock file a dead process left behind is
    simply taken over. A fold dir is locked through its k-fold parent, so `--resume parent --folds all` and
    `--resume parent/fold1` exclude each other."""

    def __init__(self, run_dir: Path):
        self.run_dir = kfold_parent(run_dir) or Path(run_dir)
        self.path = self.run_dir / LOCK
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
