"""One way to replace a file: a reader, or a crash, sees the old file or the new one, never half of one.

    with atomic_write(run_dir / "config.yaml") as f:      # text; "wb" for bytes
        f.write(text)

The bytes go to a temp file in the same folder (`.<name>.<random>.tmp`: the same file system, so the rename is
atomic), locked while it is written, flushed and fsynced, renamed over `path` with `os.replace`, and then the folder
is fsynced so the rename itself survives a power cut. On any failure, inside the caller's block too, the temp file is
removed, the exception goes on and the old file stays as it was.

The lock lets a sweeper of abandoned temp files (the image cache's `remove_abandoned_builds`) tell a live write
from a dead one: it deletes only the temp files it can lock. The rename happens before the lock is let go.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator

MODES = ("w", "wb")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", *, encoding: str | None = None,
                 newline: str | None = None) -> Iterator[IO]:
    """Yield a file open for writing; on a clean exit it replaces `path`, on an exception nothing changes."""
    if mode not in MODES:
        raise ValueError(f"atomic_write: mode {mode!r}; expected one of {', '.join(MODES)}")
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    replaced = False
    try:
        text = {} if "b" in mode else {"encoding": encoding or "utf-8", "newline": newline}
        with os.fdopen(fd, mode, **text) as f:   # owns fd from here: closed on every way out
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            yield f
            f.flush()
            os.fsync(f.fileno())
            os.replace(tmp, path)
            replaced = True
    finally:
        if not replaced:
            with contextlib.suppress(OSError):
                os.remove(tmp)
    fsync_dir(path.parent)


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a rename in `folder` durable (POSIX needs the directory entry flushed); best effort where it cannot."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
