"""The command line: parse and dispatch, nothing more. main.py builds the parser from each command group's module
(train.py: train, distill, sweep; infer.py: predict, export, explain; analysis.py: report, compare, tune-decisions;
tools.py: synth, config) and hands each command to the package below, which assembles and runs it."""
from .examples import EXAMPLES
from .main import build_parser, main, parse

__all__ = ["EXAMPLES", "build_parser", "main", "parse"]
