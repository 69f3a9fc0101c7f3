"""What every command group's parser shares: --help that ends with its examples, WxH sizes, key=value overrides
after a list option. Plain argparse, so `multitask --help` stays instant."""
from __future__ import annotations

import argparse
import os
import re
import textwrap

from .examples import EXAMPLES


def size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH like 96x128, got {text!r}") from None
    if w < 8 or h < 8:
        raise argparse.ArgumentTypeError(f"size must be at least 8x8, got {text!r}")
    return w, h


def help_for(command: str, description: str | None = None) -> dict:
    """argparse keyword arguments that end a command's --help with its examples, line breaks kept (the raw
    formatter does not wrap the description either, so it is wrapped here)."""
    text = {"description": textwrap.fill(description, 100)} if description else {}
    return {**text, "epilog": "examples:" + EXAMPLES[command], "formatter_class": argparse.RawDescriptionHelpFormatter}


def paths_and_overrides(values: list[str]) -> tuple[list[str], list[str]]:
    """(paths, key=value overrides) of a list option's values: `a.b=value` that is not an existing file."""
    is_override = lambda v: bool(re.match(r"[A-Za-z_][\w.\[\]]*=", v)) and not os.path.exists(v)  # noqa: E731
    return [v for v in values if not is_override(v)], [v for v in values if is_override(v)]
