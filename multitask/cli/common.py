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


class HelpWithChoices(argparse.Action):
    """-h/--help that also lists the names each config key takes now, plugins' included (utils/plugins.py), before
    the examples that end every help: only this help imports the config package for them, so every other --help
    stays instant."""

    def __call__(self, parser, namespace, values, option_string=None):
        from ..config.choices import choice_lists

        lines = []
        for key, names in choice_lists().items():
            shown = "any name of timm.optim.list_optimizers(), e.g. adamw, sgd, lamb, lion" \
                if key == "train.optimizer" else ", ".join(names) or "none registered"
            lines.append(textwrap.fill(f"{key}: {shown}", 100, initial_indent="  ", subsequent_indent="    "))
        header = textwrap.fill("names a config may choose (built in, then registered by plugins: MULTITASK_PLUGINS or "
                               "the multitask.plugins entry points):", 100)
        parser.epilog = header + "\n" + "\n".join(lines) + f"\n\n{parser.epilog}"
        parser.print_help()
        parser.exit()


def with_choices_help(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """`parser` (made with add_help=False) with HelpWithChoices as its -h/--help."""
    parser.add_argument("-h", "--help", action=HelpWithChoices, nargs=0, default=argparse.SUPPRESS,
                        help="show this help (with the config's choices) and exit")
    return parser


def paths_and_overrides(values: list[str]) -> tuple[list[str], list[str]]:
    """(paths, key=value overrides) of a list option's values: `a.b=value` that is not an existing file."""
    is_override = lambda v: bool(re.match(r"[A-Za-z_][\w.\[\]]*=", v)) and not os.path.exists(v)  # noqa: E731
    return [v for v in values if not is_override(v)], [v for v in values if is_override(v)]
