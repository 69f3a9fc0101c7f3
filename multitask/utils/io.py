"""The one way files are written and read: every output replaces its file atomically, every reader fails in one line.

    write_text(run_dir / "config.yaml", text)          # also write_bytes, write_json, write_csv (a DataFrame)
    write_with(path, lambda f: torch.save(obj, f), "wb", what="checkpoint", errors=(OSError, RuntimeError))
    doc = read_json(path, where="--decisions x.json")   # UserError naming `where` when missing or not JSON
    doc = parse_json(text, where="best.onnx metadata")  # the same checks on JSON text (and a nesting limit)
    table = read_csv_text(path, where="--gt gt.csv")     # every cell as text, headers stripped

`atomic_write` is the primitive: the bytes go to a temp file in the same folder (`.<name>.<random>.tmp`: the same
file system, so the rename is atomic), locked while it is written, flushed and fsynced, renamed over `path` with
`os.replace`, and then the folder is fsynced so the rename itself survives a power cut. On any failure, inside the
caller's block too, the temp file is removed, the exception goes on and the old file stays as it was. A reader, or
a crash, sees the old file or the new one, never half of one.

The lock lets a sweeper of abandoned temp files (the image cache's `remove_abandoned_builds`) tell a live write
from a dead one: it deletes only the temp files it can lock. The rename happens before the lock is let go.

The writers turn a failed write (full disk, read-only folder, ulimit -f) into one UserError line that names the file,
the cause and whether the previous file survived.
"""
from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import json
import os
import resource
import tempfile
import warnings
from pathlib import Path
from typing import IO, Any, Callable, Iterator

import pandas as pd

from .errors import UserError, short_error

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


# --------------------------------------------------------------------------------------------------- writers
def write_with(path: str | os.PathLike, write: Callable[[IO], Any], mode: str = "w", *, what: str = "file",
               errors: tuple[type[BaseException], ...] = (OSError,), newline: str | None = None) -> Path:
    """`write(f)` into `path` atomically (its folder made first); a failure in `errors` becomes one UserError line
    naming `what` and `path`, saying whether the previous file is intact."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, mode, newline=newline) as f:
            write(f)
    except errors as err:
        previous = f"the previous {what} is intact" if path.is_file() else f"no {what} was written there"
        raise UserError(f"could not write {what} {path}: {failure_cause(path.parent, err)}; {previous}") from None
    return path


def write_text(path: str | os.PathLike, text: str, *, what: str = "file") -> Path:
    return write_with(path, lambda f: f.write(text), what=what)


def write_bytes(path: str | os.PathLike, data: bytes, *, what: str = "file") -> Path:
    return write_with(path, lambda f: f.write(data), "wb", what=what)


def write_json(path: str | os.PathLike, obj: Any, *, what: str = "file", indent: int | None = 2) -> Path:
    """JSON (indented unless indent=None) with a final newline."""
    return write_text(path, json.dumps(obj, indent=indent) + "\n", what=what)


def write_csv(frame: pd.DataFrame, path: str | os.PathLike, *, what: str = "file") -> Path:
    """A DataFrame as CSV without its index."""
    return write_with(path, lambda f: frame.to_csv(f, index=False), what=what, newline="")


def failure_cause(folder: Path, err: BaseException) -> str:
    """Why a write failed: the OSError behind it (a writer such as torch's zip writer keeps it as the context of its
    own RuntimeError), else a file-size limit (ulimit -f) when one is set, else a full disk (what nearly every other
    failed write is), with the writer's own words when the disk is not full."""
    cause, limit = err, resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    while cause is not None and not (isinstance(cause, OSError) and cause.strerror):
        cause = cause.__cause__ or cause.__context__
    if limit != resource.RLIM_INFINITY and (cause is None or getattr(cause, "errno", None) == errno.EFBIG):
        return f"{os.strerror(errno.EFBIG)} (the file-size limit, ulimit -f, is {limit} bytes)"
    if cause is not None:
        return cause.strerror
    try:
        stats = os.statvfs(folder)
        free = stats.f_bavail * stats.f_frsize
    except OSError:
        free = 0
    if free < 64 * 2**20:   # less than a small checkpoint's worth left
        return os.strerror(errno.ENOSPC)
    return f"the write failed ({' '.join(str(err).split()) or type(err).__name__})"


# --------------------------------------------------------------------------------------------------- readers
def read_json(path: str | os.PathLike, *, where: str | None = None, hint: str = "") -> Any:
    """The JSON in `path`; a missing, unreadable or malformed file is one UserError line naming `where`."""
    path = Path(path)
    where = where or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{where}: file not found{'; ' + hint if hint else ''}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{where}: not readable JSON ({err}){'; ' + hint if hint else ''}") from None
    return parse_json(text, where=where, hint=hint)


def parse_json(text: str, *, where: str, hint: str = "") -> Any:
    """JSON text (a file's, an ONNX model's metadata) as data; one UserError line naming `where` when it is not JSON,
    nests too deep (RecursionError) or holds an integer past Python's 4300-digit limit (ValueError)."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as err:   # json.JSONDecodeError is a ValueError
        raise UserError(f"{where}: not readable JSON ({short_error(err)}){'; ' + hint if hint else ''}") from None
    check_depth(data, where=where)
    return data


MAX_DEPTH = 32   # our files nest 6 levels at most (a manifest's config.data.sources[i].crop); far below the recursion
# limit, so that no reader (from_dict, a message's repr) recurses itself to death on what parsed


def check_depth(data: Any, *, where: str) -> None:
    """One UserError line when lists and dicts in `data` nest deeper than MAX_DEPTH (walked without recursion)."""
    stack = [(data, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list, tuple)):
            if depth > MAX_DEPTH:
                raise UserError(f"{where}: nested more than {MAX_DEPTH} levels deep; not a file this tool wrote")
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))


def read_csv_text(path: str | os.PathLike, where: str | None = None) -> pd.DataFrame:
    """A CSV as stripped-header text columns; an unreadable file is one UserError line naming `where` (default: the
    path). The readers of competition folders, manifests and ground truth all start here.

    index_col=False: where every row has one field more than the header, pandas would otherwise take the first
    column for the index and shift every value one column left (a manifest's `male` read as its path); such a row
    is named instead, as one in the middle of the file is."""
    where = where or str(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)   # pandas' word for fields it would drop
            table = pd.read_csv(path, dtype=str, keep_default_na=False, index_col=False)
    except (pd.errors.ParserError, pd.errors.ParserWarning, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise UserError(_longer_row(path, where) or f"{where}: not a readable CSV ({str(err).splitlines()[0]})") \
            from None
    table.columns = [c.strip() for c in table.columns]
    return table


def _longer_row(path: str | os.PathLike, where: str) -> str | None:
    """The message for the CSV's first row with more fields than its header, or None."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            header = next(reader, [])
            for row in reader:
                if len(row) > len(header):
                    return (f"{where} line {reader.line_num}: {len(row)} fields, but the header has {len(header)} "
                            f"({', '.join(h.strip() for h in header)}); quote a value that holds a comma, or remove "
                            f"the extra field")
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    return None
