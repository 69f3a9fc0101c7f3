"""Utilities every layer may use: errors for people, the one atomic writer and the readers, devices and precision,
DDP, progress bars, SIGTERM as Ctrl-C, parsing and text.

    raise UserError(f"{path}: not a checkpoint; expected a file written by multitask train")
    write_csv(table, run_dir / "oof.csv")               # temp file, fsync, os.replace
    precision = resolve_precision("auto", pick_device("auto"))

The torch-backed names (devices, distributed, cpu_share) load on first use: the command line imports this package
for its errors, and `multitask --help` should not wait for torch.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .errors import UserError, one_line, short_error
from .io import atomic_write, read_json, write_bytes, write_csv, write_json, write_text, write_with
from .parsing import whole_number
from .plugins import load_plugins
from .progress import Progress
from .quiet import silenced
from .signals import Terminated, sigterm_as_interrupt
from .text import fmt, md_table

if TYPE_CHECKING:   # what static tools (the API reference, type checkers) read; at run time: __getattr__
    from .cpu_share import CpuShare
    from .devices import Precision, pick_device, resolve_precision
    from .distributed import DistInfo, barrier, init_distributed

_LAZY = {"CpuShare": "cpu_share", "Precision": "devices", "pick_device": "devices", "resolve_precision": "devices",
         "DistInfo": "distributed", "barrier": "distributed", "init_distributed": "distributed"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["CpuShare", "DistInfo", "Precision", "Progress", "Terminated", "UserError", "atomic_write", "barrier",
           "fmt", "init_distributed", "load_plugins", "md_table", "one_line", "pick_device", "read_json",
           "resolve_precision", "short_error", "sigterm_as_interrupt", "silenced", "whole_number", "write_bytes",
           "write_csv", "write_json", "write_text", "write_with"]
