"""Hooks into the training loop, for code that watches or steers a run without editing the engine.

    class Timer(Callback):
        def on_epoch_start(self, state, epoch): self.t = time.perf_counter()
        def on_epoch_end(self, state, metrics): print(state.epoch_images / (time.perf_counter() - self.t))

    fit(cfg, run_dir, callbacks=[Timer()])

Every rank calls them (check `torch.distributed` for rank 0 if only one should act). `on_epoch_end` runs after the
epoch's checkpoints are written, so raising there (a sweep pruner stopping a trial) loses nothing; setting
`state.stop = "reason"` ends training after the current epoch instead.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    from ..utils.cpu_share import CpuShare
    from .state import TrainState


class Callback:
    def on_fit_start(self, state: "TrainState") -> None:
        pass

    def on_epoch_start(self, state: "TrainState", epoch: int) -> None:
        """`epoch` is 0-based: the epoch about to train."""

    def on_step_end(self, state: "TrainState") -> None:
        """After each optimizer step (state.step already counts it)."""

    def on_train_epoch_end(self, state: "TrainState", train_metrics: dict[str, float]) -> None:
        """After the epoch's training batches, before validation (train/* losses only)."""

    def on_epoch_end(self, state: "TrainState", metrics: dict[str, float]) -> None:
        """After the epoch's validation, logging and checkpoints; metrics as logged (train/*, val/*, lr, ...)."""

    def on_fit_end(self, state: "TrainState", best_metrics: dict[str, float]) -> None:
        pass


class CallbackList(Callback):
    """Calls every callback's hook in order."""

    def __init__(self, callbacks: Iterable[Callback] = ()):
        self.callbacks = list(callbacks)

    def _each(self, hook: str, *args) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(*args)

    def on_fit_start(self, state):
        self._each("on_fit_start", state)

    def on_epoch_start(self, state, epoch):
        self._each("on_epoch_start", state, epoch)

    def on_step_end(self, state):
        self._each("on_step_end", state)

    def on_train_epoch_end(self, state, train_metrics):
        self._each("on_train_epoch_end", state, train_metrics)

    def on_epoch_end(self, state, metrics):
        self._each("on_epoch_end", state, metrics)

    def on_fit_end(self, state, best_metrics):
        self._each("on_fit_end", state, best_metrics)


class SharedCores(Callback):
    """Keeps a CPU training's torch threads at its share of the cores (utils.cpu_share) while other multitask
    processes come and go: checked at each epoch's start and every `every` seconds of steps."""

    def __init__(self, share: "CpuShare", every: float = 2.0):
        self.share, self.every, self.last = share, every, time.monotonic()

    def on_epoch_start(self, state, epoch):
        self._rebalance()

    def on_step_end(self, state):
        if time.monotonic() - self.last >= self.every:
            self._rebalance()

    def _rebalance(self) -> None:
        self.share.rebalance()
        self.last = time.monotonic()
