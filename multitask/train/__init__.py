"""Training: `run_training` (the one assembly of a training: teacher, run dir, lock, folds, resume, fit,
decisions), `fit` one run into a folder, `Callback` hooks into the loop, a caller's own sinks.

    from multitask.train import Callback, fit, run_training
    run_dir = run_training(cfg, callbacks=[MyCallback()], sinks=[MySink()])
    best = fit(cfg, "runs/mine/1", callbacks=[MyCallback()])
"""
from .callbacks import Callback
from .optim import build_optimizer
from .run import fit, run_training
from .state import TrainState
from .trainer import EpochLosses, Trainer

__all__ = ["Callback", "EpochLosses", "TrainState", "Trainer", "build_optimizer", "fit", "run_training"]
