"""What every destination of a run's numbers does: a small protocol the Tracker fans out to (Lightning's loggers
are shaped alike). TensorBoard and wandb are sinks; metrics.csv and the console are the Tracker's own.

    class MySink(Sink):
        name = "mine"
        def log_scalars(self, values, step): ...

Every method has a do-nothing default, so a sink implements only what it shows. `step` None means "the sink's own
next step" (wandb) or 0 (TensorBoard). Tables are (columns, rows); images are RGB uint8 arrays (height, width, 3).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

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
