"""One Tracker fans a run's numbers out to its sinks (TensorBoard, wandb), metrics.csv and the console.

    tracker = Tracker(run_dir=run_dir, cfg=cfg, enabled=rank == 0, resume_id=ckpt_wandb_id)
    with tracker.progress(total=len(loader), description="epoch 1 train") as bar:
        for step, batch in ...:
            bar.update(images=len(batch), loss=loss.item() if step % 50 == 0 else None)   # no per-step GPU sync
    tracker.log({"train/mask/loss": 0.41, "lr": 1e-3}, step=step)
    tracker.log_epoch(epoch, {"val/mask/f1": 0.93, ...})    # metrics.csv row + TensorBoard + wandb
    tracker.epoch_table(epoch, metrics, heads=["mask", "gender", "age"])
    tracker.publish_final(best_metrics, best_epoch, best_value=state.best)   # only when training ended normally
    tracker.close()

    with Tracker.for_report(run_dir, sinks=["tensorboard", "wandb"]) as tracker:   # what `report --log` does
        tracker.log_images({"report/age_confusion": png_bytes})
        tracker.log_tables({"report/summary": (["head", "F1"], [["age", "0.71"]])})
        tracker.log_summary({"report/age/f1": 0.71})

Each sink (sink.py) is a small class of its own: tensorboard.py, wandb_sink.py; metrics.csv is csv_log.py and the
console console.py. Tracking never stops a training run: a sink that fails says so once and goes quiet. Non-zero
DDP ranks pass enabled=False and every method becomes a no-op.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

import cv2
import numpy as np
from rich.console import Console
from rich.table import Table

from ..config import ConfigError, load_config
from ..metrics.figures import confusion_rgb  # the report's figure: one look in both places
from ..runs.run_dir import CONFIG, METRICS
from ..utils.progress import Progress
from .console import ConsoleOut
from .csv_log import CsvLog
from .sink import SINKS, Sink, Tables
from .tensorboard import TensorBoardSink
from .wandb_sink import WandbSink, wandb_run_id


class Tracker:
    def __init__(self, *, run_dir: str | Path, cfg, enabled: bool = True, resume_id: str | None = None,
                 console: Console | None = None, job_type: str = "train", sinks: Iterable[Sink] = ()):
        """`sinks`: more destinations beside the config's (TensorBoard, wandb): a caller's own Sink instances."""
        self.run_dir, self.cfg, self.enabled = Path(run_dir), cfg, enabled
        self.out = ConsoleOut(console, enabled=enabled, progress=cfg.tracking.progress)
        self.csv: CsvLog | None = None
        self._sinks: list[Sink] = []
        self.wandb: WandbSink | None = None
        self._step: int | None = None   # latest step given to log(); None until then
        self._closed = False
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if cfg.tracking.csv:
            self.csv = CsvLog(self.run_dir / METRICS)   # a resumed run keeps its history
        if cfg.tracking.tensorboard:
            self._sinks.append(TensorBoardSink.open(self.run_dir, cfg, self.out.warn))
        self.wandb = WandbSink.open(self.run_dir, cfg, warn=self.out.warn, resume_id=resume_id, job_type=job_type)
        named = [SINKS[name](self.run_dir, cfg) for name in cfg.tracking.sinks]   # registered: register_sink
        self._sinks = [s for s in [*self._sinks, self.wandb, *named, *sinks] if s is not None]

    @classmethod
    def for_report(cls, run_dir: str | Path, *, sinks, console: Console | None = None) -> "Tracker":
        """A tracker that adds to what a training left in `run_dir`: its TensorBoard folder, and its wandb run
        (resumed by id when run_dir/wandb holds one), with its config.yaml when there is one. wandb is offline
        whatever the training used: a report never waits on a network; `wandb sync` uploads it later."""
        run_dir = Path(run_dir)
        flags = [f"tracking.tensorboard={'tensorboard' in sinks}", "tracking.csv=false", "tracking.progress=false",
                 "tracking.sinks=[]",
                 f"tracking.wandb.mode={'offline' if 'wandb' in sinks else 'disabled'}"]
        saved = run_dir / CONFIG
        try:
            cfg = load_config(saved if saved.is_file() else None, flags)
        except ConfigError:   # written by another version of multitask: its tracking settings are not needed
            cfg = load_config(None, flags)
        return cls(run_dir=run_dir, cfg=cfg, resume_id=wandb_run_id(run_dir), console=console, job_type="report")

    @property
    def sinks(self) -> list[str]:
        """The names of the sinks that are open: tensorboard, wandb."""
        return [s.name for s in self._sinks if s is not self.wandb or self.wandb.run is not None]

    @property
    def wandb_id(self) -> str | None:
        return self.wandb.id if self.wandb is not None else None

    @property
    def console(self) -> Console:
        return self.out.console

    def _live(self) -> bool:
        return self.enabled and not self._closed

    # ------------------------------------------------------------------------------------------ logging
    def log(self, metrics: Mapping[str, float], *, step: int) -> None:
        if not self._live():
            return
        self._step = step if self._step is None else max(self._step, step)
        self._fan("log_scalars", {k: float(v) for k, v in metrics.items()}, step)

    def log_epoch(self, epoch: int, metrics: Mapping[str, float], *, step: int | None = None) -> None:
        """One metrics.csv row (epoch + every key) and the same values to the sinks at `step`.

        Default step: the latest step given to `log` (epoch curves share the training step axis), or the epoch
        itself when nothing logged per step (then pass step=epoch to log_confusion as well: wandb drops steps
        that go backwards)."""
        if not self._live():
            return
        values = {k: float(v) for k, v in metrics.items()}
        if self.csv is not None:
            self.csv.add(epoch, values)   # a resumed run rewrites history from its epoch on
        if step is None:
            step = epoch if self._step is None else self._step
        self._fan("log_scalars", {**values, "epoch": float(epoch)}, step)
        self._fan("flush")

    def log_confusion(self, name: str, matrix: np.ndarray, class_names: list[str], *, step: int) -> None:
        if self._live() and self._sinks:
            self._fan("log_images", {f"confusion/{name}": confusion_rgb(matrix, class_names, name)}, step)

    def log_images(self, images: Mapping[str, bytes], *, step: int | None = None) -> None:
        """PNG images by key: TensorBoard images (at `step`, else 0) and wandb images (at `step`, else wandb's
        own next step: a resumed run's step counter is not known here)."""
        if self._live() and self._sinks and images:
            self._fan("log_images", {key: png_to_rgb(png) for key, png in images.items()}, step)

    def log_tables(self, tables: Tables, *, step: int | None = None) -> None:
        """(columns, rows) by key: TensorBoard text (a Markdown table) and wandb Tables. Cells are shown as str()."""
        if self._live() and tables:
            self._fan("log_tables", tables, step)

    def log_summary(self, values: Mapping[str, float]) -> None:
        """Final numbers of a run: TensorBoard scalars at step 0, the wandb run's summary."""
        if self._live() and values:
            self._fan("log_summary", values)

    def _fan(self, method: str, *args) -> None:
        for sink in self._sinks:
            getattr(sink, method)(*args)

    # ------------------------------------------------------------------------------------------ console
    def print(self, *args, **kwargs) -> None:
        self.out.print(*args, **kwargs)

    def epoch_table(self, epoch: int, metrics: dict[str, float], heads: list[str],
                    sources: list[str] = ()) -> Table | None:
        return self.out.epoch_table(epoch, metrics, heads, sources)

    def progress(self, total: int, description: str) -> Progress:
        return self.out.progress(total, description)

    # ------------------------------------------------------------------------------------------ end
    def publish_final(self, best_metrics: Mapping[str, float], best_epoch: int | None, *,
                      best_value: float | None = None) -> None:
        """TensorBoard hparams with the best epoch's metrics, and wandb artifacts best.pt and oof.csv.

        The engine calls it once, after its last epoch: a run that crashed, was interrupted or pruned publishes
        nothing. `best_metrics` / `best_epoch`: the epoch best.pt holds, as the engine found it. Empty after a resume
        whose epochs did not improve: the best epoch was trained by an earlier process, and `best_value` (the
        monitored value restored with the checkpoint) finds its row in metrics.csv; without that row only the
        monitored value is published, with no epoch."""
        if not self._live():
            return
        if not best_metrics and best_value is not None:
            best_epoch, best_metrics = self._earlier_best(best_value)
        if not best_metrics:
            return
        best = {f"best/{k}": float(v) for k, v in best_metrics.items() if k.startswith("val/") and "/f1_" not in k}
        if best_epoch is not None:
            best["best/epoch"] = float(best_epoch)
        self._fan("publish_final", best)

    def _earlier_best(self, value: float) -> tuple[int | None, dict[str, float]]:
        """(epoch, metrics) of the first metrics.csv row where the monitored metric has `value` (the first epoch to
        reach it is the one best.pt holds); (None, {monitor: value}) when no row has it."""
        monitor = self.cfg.monitored_metric()
        epoch, row = self.csv.first_with(monitor, value) if self.csv is not None else (None, {})
        return (epoch, row) if row else (None, {monitor: value})

    def close(self, exit_code: int = 0) -> None:
        """Flush and close the sinks; publishes nothing (that is `publish_final`, at a normal end of training)."""
        if self._closed:
            return
        self._closed = True
        for sink in self._sinks:
            sink.close(exit_code)

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, kind, value, tb) -> None:
        self.close(exit_code=0 if kind is None else 1)


def png_to_rgb(png: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "not a PNG image"
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
