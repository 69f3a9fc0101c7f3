"""One trial of a sweep: sample its values, build and check its config, train it (or resume it) in its own run dir
as any training is run (run_training: teacher, lock, decisions.json), report each validation to the pruner.

    value = run_trial(sweep, trial, quiet=False)      # the objective: train.monitor at the best epoch
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

import optuna
import pandas as pd

from ..config import to_dict
from ..runs.checkpoint import load_checkpoint
from ..runs.run_dir import METRICS, find_checkpoint
from ..train.callbacks import Callback
from ..train.run import run_training
from ..utils.errors import UserError, one_line
from .study import Sweep, storage_failure


class OptunaPruning(Callback):
    """Reports the monitored metric after each validation; raises TrialPruned when the pruner says so. A resumed
    trial first reports its earlier epochs again (`replay`: its run dir); at the end, `value` is the objective."""

    def __init__(self, trial, monitor: str, replay: Path | None = None):
        self.trial, self.monitor, self.replay = trial, monitor, replay
        self.value: float | None = None

    def on_fit_start(self, state):
        if self.replay is not None:
            replay_history(self.trial, self.replay, self.monitor, upto=state.epoch)

    def on_fit_end(self, state, best_metrics):
        # this process's best epoch, else the best a resumed trial had reached before (it trained no further)
        best = best_metrics.get(self.monitor, state.best)
        self.value = None if best is None else float(best)

    def on_epoch_end(self, state, metrics):
        if self.monitor not in metrics:   # no validation this epoch (train.val_every)
            return
        value = float(metrics[self.monitor])
        self.trial.report(value, state.epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {state.epoch}: {self.monitor} {value:.4f}")


def run_trial(sweep: Sweep, trial, *, quiet: bool) -> float:
    """The objective: sample, build and validate the config, train (or resume) in the trial's run dir."""
    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("pid", os.getpid())
    values = sweep.space.sample(trial)
    cfg = sweep.build(sweep.space.overrides(values))
    trial.set_user_attr("config", to_dict(cfg))
    monitor = cfg.monitored_metric()
    trial.set_user_attr("monitor", monitor)
    cfg.tracking.wandb.group = cfg.tracking.wandb.group or sweep.name
    cfg.tracking.wandb.name = cfg.tracking.wandb.name or f"{sweep.name}/trial{trial.number}"
    if quiet:
        cfg.tracking.progress = False    # parallel progress bars would garble one terminal
    resume = trial.user_attrs.get("resume_dir")
    last = find_checkpoint(Path(resume), want="last") if resume else None
    resumed = last is not None and trial.user_attrs.get("resume_host") == socket.gethostname()
    run_dir = last.parent if resumed else sweep.dir / str(trial.number)
    trial.set_user_attr("run_dir", str(run_dir))
    pruning = OptunaPruning(trial, monitor, replay=run_dir if resumed else None)
    where = {"resume": str(last)} if resumed else {"run_dir": run_dir}
    run_training(cfg, **where, callbacks=[pruning])
    # a resumed trial that had finished training trains nothing (no hook runs): its checkpoint holds its best
    value = pruning.value if pruning.value is not None or not resumed else load_checkpoint(last).get("best")
    if value is None:
        raise UserError(f"{monitor} was never validated (train.val_every > train.epochs?)")
    return float(value)


def replay_history(trial, run_dir: Path, monitor: str, *, upto: int) -> None:
    """A resumed trial reports its earlier epochs again, so the pruner judges it on its whole curve."""
    path = run_dir / METRICS
    if not path.is_file():
        return
    rows = pd.read_csv(path)
    if monitor in rows:
        for epoch, value in zip(rows["epoch"], rows[monitor]):
            if epoch <= upto and pd.notna(value):
                trial.report(float(value), int(epoch))


def objective(sweep: Sweep, *, quiet: bool):
    def run(trial) -> float:
        try:
            return run_trial(sweep, trial, quiet=quiet)
        except optuna.TrialPruned:
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            raise
        except Exception as err:   # recorded on the trial; the sweep goes on with the next one
            if isinstance(err, optuna.exceptions.StorageInternalError):   # says which database, and why
                err = storage_failure(sweep, err)
            trial.set_user_attr("fail_reason", one_line(err))
            raise
    return run
