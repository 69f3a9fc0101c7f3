"""Command line: `multitask {train,distill,predict,export,report,explain,synth,sweep,compare,tune-decisions,config}`.

    multitask synth --out data/synthetic --people 60 --size 96x128
    multitask train --config configs/quickstart.yaml --heads mask,gender,age train.epochs=3
    multitask distill --teacher runs/kfold/1 --config configs/quickstart.yaml name=student
    multitask predict --ckpt runs/quickstart/1 --data data/synthetic --out out/ --tta identity,hflip \\
        --gt data/synthetic/eval/gt.csv
    multitask export runs/quickstart/1 --format onnx
    multitask report runs/quickstart/1
    multitask explain --ckpt runs/quickstart/1 photo.jpg --out out/explain
    multitask config show --config configs/quickstart.yaml train.epochs=3
    multitask sweep --config configs/quickstart.yaml --space configs/sweeps/optimizer.yaml --trials 20
    multitask compare runs/quickstart/1 runs/quickstart_single18/1
    multitask tune-decisions runs/quickstart/1

Bad input (and a full or unwritable disk) ends with one line on stderr and exit code 2; any other failure with
one line and exit code 1. `--debug` (or MULTITASK_DEBUG=1) shows the traceback instead.
Each command imports what it runs (torch, timm, ...) inside its function, so `--help` is instant; these (in cli/) are
the package's only function-local imports of itself.
"""
from __future__ import annotations

import argparse
import os
import sys

from ..utils.errors import UserError, one_line
from ..utils.plugins import load_plugins
from ..utils.signals import TERMINATED_EXIT, Terminated, sigterm_as_interrupt
from . import analysis, infer, tools, train
from .common import help_for


def build_parser() -> argparse.ArgumentParser:
    """Every command's parser, in the order --help lists them; each group's module declares its own."""
    parser = argparse.ArgumentParser(prog="multitask", **help_for("multitask", __doc__.split("\n\n")[0]))
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (train.add_train_parser, train.add_distill_parser, infer.add_predict_parser, infer.add_export_parser,
                analysis.add_report_parser, infer.add_explain_parser, tools.add_synth_parser, tools.add_config_parser,
                train.add_sweep_parser, analysis.add_compare_parser, analysis.add_tune_decisions_parser):
        add(sub)
    return parser


COMMANDS = {"train": train.train, "distill": train.distill, "predict": infer.predict, "export": infer.export,
            "report": analysis.report, "explain": infer.explain, "synth": tools.synth, "sweep": train.sweep,
            "compare": analysis.compare, "config": tools.config, "tune-decisions": analysis.tune_decisions}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """Options may come anywhere: `train key=value --heads age` as well as `train --heads age key=value`.

    argparse takes one run of positionals, so overrides after an option come back unrecognised: they are the
    train command's overrides. Anything else unrecognised is the usual usage error."""
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    unknown = [a for a in rest if a.startswith("-") or args.command not in ("train", "distill")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if rest:
        args.overrides = [*args.overrides, *rest]
    return args


def main(argv: list[str] | None = None) -> int:
    try:   # before parsing: a plugin's names show in --help and pass the config's checks
        load_plugins()
    except UserError as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    args = parse(argv)
    debug = getattr(args, "debug", False) or os.environ.get("MULTITASK_DEBUG") == "1"
    try:
        with sigterm_as_interrupt():   # a scheduler's or `timeout`'s stop ends like Ctrl-C: cleaned up, resumable
            return COMMANDS[args.command](args)
    except Terminated:
        print("terminated", file=sys.stderr)
        return TERMINATED_EXIT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if debug:
            raise
        print(f"error: {one_line(err)}", file=sys.stderr)
        # 2: bad input or a full/unwritable disk (the person can fix it); 1: a bug, worth the traceback
        return 2 if isinstance(err, (UserError, OSError)) else 1

