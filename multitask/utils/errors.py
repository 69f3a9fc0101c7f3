"""Errors for people: one exception type for bad input, and the one way any failure becomes a single line.

    raise UserError("data.root: data/x not found; expected a folder holding train/")
    print(f"error: {one_line(err)}")                  # the CLI: one line, exit 2 for UserError / OSError, else 1
    warn(f"wandb init failed ({short_error(err)})")   # a third-party error inside our own sentence
"""
from __future__ import annotations

import errno


class UserError(Exception):
    """Bad input from a person (file, key, value). The message says what, where and what would be right."""


_WRITABLE = "make it writable or choose another folder"
OS_HINTS = {errno.ENOSPC: "free some disk space (or point output_dir / data.cache_dir elsewhere) and rerun",
            errno.EDQUOT: "free some of your disk quota and rerun", errno.EACCES: _WRITABLE, errno.EPERM: _WRITABLE,
            errno.EROFS: "the file system is read-only; choose another folder"}


def short_error(err: BaseException, limit: int = 160, *, kind: bool = False) -> str:
    """A third-party error's text on one line, cut to `limit` characters; `kind` puts its type name first
    ('TypeError: ...'). An error without text gives its type name (or 'no details' with `kind`)."""
    text = " ".join(str(err).split())
    if kind:
        text = f"{type(err).__name__}: {text or 'no details'}"
    else:
        text = text or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def one_line(err: BaseException) -> str:
    """The message a person needs, on one line, for every kind of failure (tracebacks are for --debug)."""
    text = str(err)
    if "Original Traceback" in text:
        # re-raised from a DataLoader worker: the text is the worker's traceback; its last line is the error
        last = text.strip().splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    text = " ".join(text.split())
    if isinstance(err, UserError):
        return text
    if isinstance(err, OSError) and err.strerror:
        where = f" {err.filename}" if err.filename else ""
        return f"{err.strerror}:{where}; {OS_HINTS.get(err.errno, 'check the path and its permissions')}"
    return (f"unexpected {type(err).__name__}: {text or 'no message'}; rerun with --debug for the traceback "
            "and report it")
