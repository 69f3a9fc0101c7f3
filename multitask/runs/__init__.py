"""Runs: what a run leaves on disk. The file names, run and fold dirs, the checkpoint format, resume rules and the
run-dir lock.

    ckpt = load_checkpoint(find_checkpoint(Path("runs/quickstart/1")))   # best.pt, else last.pt
    model, cfg = model_from_checkpoint(ckpt)
"""
from .checkpoint import (
    FORMAT,
    VERSION,
    checkpoint_config,
    checkpoint_info,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from .locks import RunDirLock
from .run_dir import (
    BEST,
    CONFIG,
    CROPS,
    DECISIONS,
    LAST,
    METRICS,
    OOF,
    PREDICTIONS,
    SCORES,
    SUBMISSION,
    TEACHER,
    find_checkpoint,
    fold_run_dir,
    kfold_parent,
    make_run_dir,
    resolve_checkpoints,
    resolve_resume,
)

__all__ = ["BEST", "CONFIG", "CROPS", "DECISIONS", "FORMAT", "LAST", "METRICS", "OOF", "PREDICTIONS", "RunDirLock",
           "SCORES", "SUBMISSION", "TEACHER", "VERSION", "checkpoint_config", "checkpoint_info", "find_checkpoint",
           "fold_run_dir", "kfold_parent", "load_checkpoint", "make_run_dir", "model_from_checkpoint",
           "resolve_checkpoints", "resolve_resume", "save_checkpoint"]
