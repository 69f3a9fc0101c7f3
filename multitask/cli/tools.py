"""`multitask synth` and `config show`: a synthetic data set, and the resolved config as YAML."""
from __future__ import annotations

import argparse
import sys

from .common import help_for, size


def add_synth_parser(sub) -> None:
    syn = sub.add_parser("synth", help="write a synthetic data set in the competition layout", **help_for("synth"))
    syn.add_argument("--out", required=True)
    syn.add_argument("--people", type=int, default=60)
    syn.add_argument("--size", type=size, default=(96, 128), help="WxH (default 96x128)")
    syn.add_argument("--seed", type=int, default=0)
    syn.add_argument("--eval-people", type=int, default=None,
                     help="people in the eval set (default: a quarter of --people, at least 2)")
    syn.add_argument("--debug", action="store_true", default=argparse.SUPPRESS)


def add_config_parser(sub) -> None:
    config = sub.add_parser("config", help="inspect configs", **help_for("config"))
    config_sub = config.add_subparsers(dest="config_command", required=True)
    show = config_sub.add_parser("show", help="print the fully resolved config as YAML", **help_for(
        "config show", "Print the resolved config (the file, then the overrides) as YAML: every key with its value, "
        "and the default as a trailing comment where the value differs from it. The output loads back as the same "
        "config: `multitask train --config` it."))
    show.add_argument("--config", "-c", help="YAML config (default: the built-in defaults)")
    show.add_argument("overrides", nargs="*", help="key=value config overrides")
    show.add_argument("--debug", action="store_true", default=argparse.SUPPRESS)


def config(args) -> int:
    from ..config import load_config  # lazy: `--help` stays instant
    from ..config.show import show_config

    cfg = load_config(args.config, list(args.overrides))
    source = " ".join([args.config or "built-in defaults", *args.overrides])
    sys.stdout.write(show_config(cfg, source=source))
    return 0


def synth(args) -> int:
    from rich.console import Console  # lazy: `--help` stays instant

    from ..data.synthetic import write_synthetic

    summary = write_synthetic(args.out, people=args.people, width=args.size[0], height=args.size[1], seed=args.seed,
                              eval_people=args.eval_people)
    Console().print(f"[green]wrote[/] {summary['images']} images of {summary['people']} people and "
                    f"{summary['eval_images']} eval images to {args.out}")
    return 0
