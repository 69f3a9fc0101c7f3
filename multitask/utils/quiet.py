"""Third-party chatter kept off the terminal: what a library prints from C++ goes past sys.stdout, so it is caught
at the file descriptors.

    with silenced() as said:          # fds 1 and 2 go to a temp file; Python's print too
        torch.onnx.export(...)        # an exporter's 258-line IR dump on failure stays here
    said()                            # the text caught so far, for --debug or an error's detail
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from typing import Callable, Iterator


@contextlib.contextmanager
def silenced() -> Iterator[Callable[[], str]]:
    """Send fds 1 and 2 (and sys.stdout / sys.stderr) to a temp file for the block; restored on every way out."""
    with tempfile.TemporaryFile(mode="w+b") as sink:
        def said() -> str:
            sink.flush()
            sink.seek(0)
            return sink.read().decode("utf-8", "replace")
        for stream in (sys.stdout, sys.stderr):   # what was printed before goes out before the fds move
            with contextlib.suppress(AttributeError, ValueError, OSError):
                stream.flush()
        saved = [os.dup(1), os.dup(2)]
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
                yield said
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(AttributeError, ValueError, OSError):
                    stream.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
