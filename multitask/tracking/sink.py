"""What every destination of a run's numbers does: a small protocol the Tracker fans out to (Lightning's loggers
are shaped alike). TensorBoard and wandb are sinks; metrics.csv and the console are the Tracker's own.

    class MySink(Sink):
        name = "mine"
        def log_scalars(self, values, step): ...

    register_sink("mine", lambda run_dir, cfg: MySink())   # then `tracking.sinks: [mine]` in a config
    fit(cfg, run_dir, sinks=[MySink()])                      # or an instance, for one training

Every method has a do-nothing default, so a sink implements only what it shows. `step` None means "the sink's own
next step" (wandb) or 0 (TensorBoard). Tables are (columns, rows); images are RGB uint8 arrays (height, width, 3).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from ..config.registered import register_choice

Tables = Mapping[str, tuple[Sequence[str], Sequence[Sequence]]]


class Sink:
    name = "sink"

    def log_scalars(self, values: Mapping[str, float], step: int | None) -> None:
        pass

    def log_images(self, images: Mapping[str, np.ndarray], step: int | None) -> None:
        pass

    def log_tables(self, tables: Tables, step: int | None) -> None:
        pass

    def log_summary(self, values: Mapping[str, float]) -> None:
        """Final numbers of a run (the report's): not a point on a curve."""

    def publish_final(self, best: Mapping[str, float]) -> None:
        """The best epoch's metrics, once, after a normal end of training."""

    def flush(self) -> None:
        pass

    def close(self, exit_code: int = 0) -> None:
        pass


SinkFactory = Callable[[Path, object], "Sink | None"]
# sinks chosen by name in `tracking.sinks` (TensorBoard and wandb have keys of their own: tracking.tensorboard,
# tracking.wandb)
SINKS: dict[str, SinkFactory] = {}


def register_sink(name: str, factory: SinkFactory) -> None:
    """Make `name` a choice of `tracking.sinks`, validated as every config key is.

    Args:
        name: the name configs use.
        factory: `factory(run_dir, cfg) -> Sink` (or None: nothing to open), called on rank 0 as a training's
            Tracker opens; the Tracker fans every logged value out to it and closes it with the run."""
    if name in ("tensorboard", "wandb", "csv", "console"):
        raise ValueError(f"register_sink: '{name}' is built in (tracking.{name})")
    register_choice("tracking.sinks", name)
    SINKS[name] = factory
