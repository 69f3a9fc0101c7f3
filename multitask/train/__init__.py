"""Training: `fit` one run, `run_training` (run dir, lock, folds, resume), `Callback` hooks into the loop.

    from multitask.train import Callback, fit
    best = fit(cfg, "runs/mine/1", callbacks=[MyCallback()])
"""
from .callbacks import Callback
from .run import fit, run_training

__all__ = ["Callback", "fit", "run_training"]
