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
"""
from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path

import torch


def machine_cores() -> int:
    """The cores this process may run on (its affinity mask, not the machine's count: containers, taskset)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):   # not on Linux
        return max(1, os.cpu_count() or 1)


def default_folder() -> Path:
    return Path(tempfile.gettempdir()) / f"multitask-cpu-{os.getuid()}"


class CpuShare:
    """This process's share of the cores among the multitask processes running now (see the module doc)."""

    def __init__(self, folder: Path | None = None, cores: int | None = None):
        self.folder = Path(folder) if folder is not None else default_folder()
        self.cores = cores or machine_cores()
        self.fd: int | None = None

    def join(self) -> CpuShare:
        """Register this process (a no-op where the folder cannot be written: it then keeps torch's threads)."""
        try:
            self.folder.mkdir(mode=0o700, exist_ok=True)
            self.fd = os.open(self.folder / str(os.getpid()), os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.leave()
            return self
        self.rebalance()
        return self

    def processes(self) -> int:
        """How many registered processes are alive (this one included); dead ones' files are removed."""
        alive = 0
        for path in self.folder.glob("[0-9]*"):
            if path.name == str(os.getpid()):
                alive += 1
                continue
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:   # gone meanwhile
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                alive += 1   # its owner holds it
            else:
                path.unlink(missing_ok=True)   # a dead process's
            finally:
                os.close(fd)
        return max(alive, 1)

    def threads(self) -> int:
        return max(1, self.cores // self.processes())

    def rebalance(self) -> int:
        """Set torch's intra-op threads to this process's share; returns it."""
        if self.fd is None:
            return torch.get_num_threads()
        threads = self.threads()
        if threads != torch.get_num_threads():
            torch.set_num_threads(threads)
        return threads

    def leave(self) -> None:
        if self.fd is None:
            return
        (self.folder / str(os.getpid())).unlink(missing_ok=True)
        os.close(self.fd)
        self.fd = None
