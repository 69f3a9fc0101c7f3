"""SIGTERM (what schedulers, `timeout`, `docker stop` and torchrun send) ends a command the way Ctrl-C does.

    with sigterm_as_interrupt():
        run()        # a SIGTERM raises Terminated here, a KeyboardInterrupt: the same clean end as Ctrl-C

Why: Python's default for SIGTERM is to die on the spot, so a stopped training skipped every `finally`: its run dir
kept a `.lock` and a half-made folder, where Ctrl-C removes a run dir that saved nothing and keeps a resumable
last.pt. Raising a KeyboardInterrupt subclass sends SIGTERM down that same path, every `except KeyboardInterrupt`
(a sweep's interrupted trial, say) included.
"""
from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

TERMINATED_EXIT = 128 + signal.SIGTERM   # what a shell reports for a process SIGTERM ended (Ctrl-C: 130)


class Terminated(KeyboardInterrupt):
    """A SIGTERM, raised where Ctrl-C's KeyboardInterrupt would be."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated("terminated (SIGTERM)")


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises Terminated (only the main thread may set a handler; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
