"""Training: `run_training` (the one assembly of a training: teacher, run dir, lock, folds, resume, fit,
decisions), `fit` one run into a folder, `Callback` hooks into the loop, a caller's own sinks.

    from multitask.train import Callback, fit, run_training
    run_dir = run_training(cfg, callbacks=[MyCallback()], sinks=[MySink()])
    best = fit(cfg, "runs/mine/1", callbacks=[MyCallback()])
"""
from .callbacks import Callback
from .run import fit, run_training

__all__ = ["Callback", "fit", "run_training"]
