"""Tuned decisions, all of them: fitting class offsets on a run's OOF (fit.py), applying them to probabilities
(apply.py) and decisions.json, the file that carries them from one to the other (file.py).

    from multitask.decisions import fit_run, decide
    fit_run("runs/quickstart/1")                   # RUN_DIR/oof.csv -> RUN_DIR/decisions.json
    labels = decide(probs, heads, offsets)         # {head: (N,)}: argmax of log p + offsets
"""
from .apply import apply_offsets, decide, decide_joint, log_probabilities
from .file import read, write
from .fit import after_training, fit_run, fit_table

__all__ = ["after_training", "apply_offsets", "decide", "decide_joint", "fit_run", "fit_table", "log_probabilities",
           "read", "write"]
