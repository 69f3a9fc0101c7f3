"""TensorBoard: scalars, images, Markdown tables and the hparams table, under <run dir>/tb."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from ..config import to_dict
from ..runs.run_dir import TENSORBOARD
from ..utils.errors import short_error
from ..utils.text import md_table
from .sink import Sink, Tables


class TensorBoardSink(Sink):
    name = "tensorboard"

    def __init__(self, writer, cfg, warn: Callable[[str], None]):
        self.writer, self.cfg, self.warn = writer, cfg, warn

    @classmethod
    def open(cls, run_dir: Path, cfg, warn: Callable[[str], None]) -> "TensorBoardSink | None":
        try:   # tensorboard is a dependency, but a broken install must not stop a training
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            warn(f"tensorboard unavailable ({err}); set tracking.tensorboard=false to hide this")
            return None
        return cls(SummaryWriter(log_dir=str(Path(run_dir) / TENSORBOARD)), cfg, warn)

    def log_scalars(self, values: Mapping[str, float], step: int | None) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, global_step=step or 0)

    def log_images(self, images: Mapping[str, np.ndarray], step: int | None) -> None:
        for key, image in images.items():
            self.writer.add_image(key, image, global_step=step or 0, dataformats="HWC")

    def log_tables(self, tables: Tables, step: int | None) -> None:
        for key, (columns, rows) in tables.items():
            cells = [[str(v) for v in row] for row in rows]   # str(), as wandb gets them
            self.writer.add_text(key, "\n".join(md_table([str(c) for c in columns], cells)), global_step=step or 0)

    def log_summary(self, values: Mapping[str, float]) -> None:
        self.log_scalars({k: float(v) for k, v in values.items()}, 0)

    def publish_final(self, best: Mapping[str, float]) -> None:
        try:
            self.writer.add_hparams(hparams_of(self.cfg), dict(best), run_name=".")
        except Exception as err:   # a figure is never worth a failed run
            self.warn(f"tensorboard hparams not written ({short_error(err)})")

    def flush(self) -> None:
        self.writer.flush()

    def close(self, exit_code: int = 0) -> None:
        self.writer.flush()
        self.writer.close()


def hparams_of(cfg) -> dict:
    """The knobs worth a column in TensorBoard's hparams table: model, train scalars, the heads' mixes and weights."""
    out: dict = {"model.backbone": cfg.model.backbone, "data.image_size": str(cfg.data.image_size), "seed": cfg.seed}
    for key, value in to_dict(cfg.train).items():
        if isinstance(value, (bool, int, float, str)):
            out[f"train.{key}"] = value
    for head in cfg.trained_heads():
        out[f"heads.{head.name}.loss"] = str(head.loss)
        out[f"heads.{head.name}.weight"] = head.weight
    return out
