"""Intra-op threads sized by how many multitask processes share this machine's cores.

    share = CpuShare().join()      # registers this process; sets torch's threads to cores // processes
    share.rebalance()              # again now and then (the trainer: every few seconds): another may have come or gone
    share.leave()

Why: torch runs every op on all cores by default, and its OpenMP threads meet at a barrier after each op. Two
trainings on 2 cores are 4 threads on 2 cores: at every barrier a thread waits for one the other process has the
core for, a whole scheduler slice, many times a step. Two quickstarts at once took 3.7x the time of the two one
after the other (BENCHMARKS.md, "Two trainings at once"). With one thread each they run side by side.

Each process holds an exclusive flock on <tmp>/multitask-cpu-<uid>/<pid>; counting tries to lock every file there:
a lock that is taken means a live process, one that is free was left by a dead one (the kernel drops a flock with its
process, even on kill -9) and is removed.

The folder's name is predictable, so in a shared /tmp another user may have made it first, or planted a link to a
folder of files worth keeping. It is trusted the way ssh-agent and tmux trust theirs: a real folder (never a link)
owned by this user with no group/other access, opened once and used only through that descriptor. Inside it, only
regular files owned by this user and named like a pid are opened (O_NOFOLLOW: never through a link; O_NONBLOCK: a
FIFO cannot block) or removed. Anything else turns thread sharing off for this process with one warning: torch keeps
its threads and the training goes on.
"""
from __future__ import annotations

import fcntl
import os
import re
import stat
import tempfile
import warnings
from pathlib import Path

import torch

PID_NAME = re.compile(r"[1-9][0-9]*")   # what str(os.getpid()) writes: not `1.jpg`, `2024_report.csv`, `٤٢`
OPEN_ENTRY = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class UnsafeFolder(Exception):
    """The folder, or something in it, is not what this module made: thread sharing stops rather than touch it."""


def machine_cores() -> int:
    """The cores this process may run on (its affinity mask, not the machine's count: containers, taskset)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):   # not on Linux
        return max(1, os.cpu_count() or 1)


def default_folder() -> Path:
    return Path(tempfile.gettempdir()) / f"multitask-cpu-{os.getuid()}"


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _foreign(st: os.stat_result) -> str | None:
    """Why a file or folder is not this user's own, or None."""
    uid = os.geteuid()
    return f"is owned by uid {st.st_uid}, not this user (uid {uid})" if st.st_uid != uid else None


def open_folder(folder: Path) -> int:
    """A descriptor of `folder` (made 0700 when missing), once it is known to be this user's private folder."""
    try:
        os.mkdir(folder, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(folder)
    if stat.S_ISLNK(st.st_mode):
        raise UnsafeFolder("is a symbolic link")
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeFolder("is not a folder")
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        problem = _foreign(st) or (f"has mode {stat.S_IMODE(st.st_mode):04o}; expected 0700 (no group or other "
                                   "access)" if st.st_mode & 0o077 else None)
        if problem is None and not _same(st, os.lstat(folder)):
            problem = "was replaced while it was opened"
        if problem is not None:
            raise UnsafeFolder(problem)
    except BaseException:
        os.close(fd)
        raise
    return fd


class CpuShare:
    """This process's share of the cores among the multitask processes running now (see the module doc)."""

    def __init__(self, folder: Path | None = None, cores: int | None = None):
        self.folder = Path(folder) if folder is not None else default_folder()
        self.cores = cores or machine_cores()
        self.fd: int | None = None       # this process's own file, flocked
        self.dir_fd: int | None = None   # the checked folder: every name below is looked up through it

    def join(self) -> CpuShare:
        """Register this process; where the folder cannot be used safely, warn once and keep torch's threads."""
        try:
            self.dir_fd = open_folder(self.folder)
            self.fd = self._own_file()
        except (UnsafeFolder, OSError) as err:
            self._stop(err)
            return self
        self.rebalance()
        return self

    def _own_file(self) -> int:
        """<pid>, made and flocked by this process. Another process that found it unlocked in the instant between
        the open and the flock may have removed it: then it is made again, so this process is never uncounted."""
        name = str(os.getpid())
        for _ in range(3):
            fd = os.open(name, os.O_RDWR | os.O_CREAT | OPEN_ENTRY, 0o600, dir_fd=self.dir_fd)
            try:
                problem = self._entry_problem(name, os.fstat(fd))
                if problem:
                    raise UnsafeFolder(problem)
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if _same(os.fstat(fd), os.stat(name, dir_fd=self.dir_fd, follow_symlinks=False)):
                    return fd
            except (BlockingIOError, FileNotFoundError):
                pass   # that other process holds or removed it: try again
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
        raise UnsafeFolder(f"keeps losing this process's file {name}")

    @staticmethod
    def _entry_problem(name: str, st: os.stat_result) -> str | None:
        if not stat.S_ISREG(st.st_mode):
            return f"holds {name}, which is not a regular file"
        foreign = _foreign(st)
        return f"holds {name}, which {foreign}" if foreign else None

    def processes(self) -> int:
        """How many registered processes are alive (this one included); dead ones' files are removed. Raises
        UnsafeFolder on an entry named like a pid that this module did not make."""
        if self.dir_fd is None:
            return 1
        alive = 0
        for name in os.listdir(self.dir_fd):
            if not PID_NAME.fullmatch(name):
                continue   # not ours to count, read or remove
            if name == str(os.getpid()):
                alive += 1
                continue
            alive += self._alive(name)
        return max(alive, 1)

    def _alive(self, name: str) -> int:
        """1 when another process holds <name>'s lock; 0 when it is free (that file is removed) or gone."""
        try:
            st = os.stat(name, dir_fd=self.dir_fd, follow_symlinks=False)
            problem = self._entry_problem(name, st)
            if problem:
                raise UnsafeFolder(problem)
            fd = os.open(name, os.O_RDONLY | OPEN_ENTRY, dir_fd=self.dir_fd)
        except FileNotFoundError:   # its process left meanwhile
            return 0
        try:
            if not _same(os.fstat(fd), st):
                raise UnsafeFolder(f"holds {name}, which was replaced while it was opened")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 1   # its owner holds it
            os.unlink(name, dir_fd=self.dir_fd)   # a dead process's (regular, ours, checked above)
            return 0
        finally:
            os.close(fd)

    def threads(self) -> int:
        return max(1, self.cores // self.processes())

    def rebalance(self) -> int:
        """Set torch's intra-op threads to this process's share; returns it."""
        if self.fd is None:
            return torch.get_num_threads()
        try:
            threads = self.threads()
        except (UnsafeFolder, OSError) as err:
            self._stop(err)
            return torch.get_num_threads()
        if threads != torch.get_num_threads():
            torch.set_num_threads(threads)
        return threads

    def _stop(self, err: BaseException) -> None:
        """Thread sharing off for this process, said once; never an error for the training."""
        self.leave()
        why = err if isinstance(err, UnsafeFolder) else f"cannot be used ({err.strerror or type(err).__name__})"
        warnings.warn(f"CPU thread sharing off: {self.folder} {why}; each training keeps torch's own thread count "
                      f"(remove that folder if it is yours, or set train.cpu_threads=N)", RuntimeWarning,
                      stacklevel=3)

    def leave(self) -> None:
        if self.fd is not None:
            name = str(os.getpid())
            try:
                if _same(os.fstat(self.fd), os.stat(name, dir_fd=self.dir_fd, follow_symlinks=False)):
                    os.unlink(name, dir_fd=self.dir_fd)
            except OSError:   # gone already
                pass
            os.close(self.fd)
            self.fd = None
        if self.dir_fd is not None:
            os.close(self.dir_fd)
            self.dir_fd = None
