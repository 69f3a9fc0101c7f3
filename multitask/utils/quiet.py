"""Third-party chatter kept off the terminal: what a library prints from C++ goes past sys.stdout, so it is stopped
at the file descriptors.

    with silenced():                  # fds 1 and 2 (and Python's sys.stdout / sys.stderr) go to /dev/null
        torch.onnx.export(...)        # the exporter's IR dump on failure (hundreds of lines) never shows
"""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator


@contextlib.contextmanager
def silenced() -> Iterator[None]:
    """Send fds 1 and 2 and sys.stdout / sys.stderr to /dev/null for the block; restored on every way out. Errors
    still come through as exceptions: the caller turns them into its one line."""
    _flush()   # what was printed before goes out before the fds move
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
            os.dup2(null.fileno(), 1)
            os.dup2(null.fileno(), 2)
            yield
    finally:
        _flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError, OSError):   # a stream may be None or closed
            stream.flush()
