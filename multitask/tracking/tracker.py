"""One Tracker fans metrics out to TensorBoard, wandb, metrics.csv and the rich console.

    tracker = Tracker(run_dir=run_dir, cfg=cfg, enabled=rank == 0, resume_id=ckpt_wandb_id)
    with tracker.progress(total=len(loader), description="epoch 1 train") as bar:
        for step, batch in ...:
            bar.update(len(batch), loss=loss.item() if step % 50 == 0 else None)   # no per-step GPU sync
    tracker.log({"train/mask/loss": 0.41, "lr": 1e-3}, step=step)
    tracker.log_epoch(epoch, {"val/mask/f1": 0.93, ...})    # metrics.csv row + TensorBoard + wandb
    tracker.epoch_table(epoch, metrics, heads=["mask", "gender", "age"])
    tracker.publish_final(best_metrics, best_epoch, best_value=state.best)   # only when training ended normally
    tracker.close()

    with Tracker.for_report(run_dir, sinks=["tensorboard", "wandb"]) as tracker:   # what `report --log` does
        tracker.log_images({"report/age_confusion": png_bytes})
        tracker.log_tables({"report/summary": (["head", "F1"], [["age", "0.71"]])})
        tracker.log_summary({"report/age/f1": 0.71})

This module is the one place that talks to TensorBoard and wandb. wandb defaults to offline (no network needed).
Online mode falls back to offline when there is no API key or the server cannot be reached, and to nothing when
wandb fails altogether: tracking never stops a training run. Non-zero DDP ranks pass enabled=False and every method
becomes a no-op.
"""
from __future__ import annotations

import contextlib
import csv
import math
import os
import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from rich import box
from rich.console import Console
from rich.table import Table

from ..analysis.report.html import md_table
from ..config import to_dict
from ..runs.run_dir import FOLD_DIR
from ..utils.errors import UserError
from ..utils.io import atomic_write

WANDB_INIT_TIMEOUT = 30.0   # seconds; wandb's own default (90 s) is long to wait for a server that is not there


class Tracker:
    def __init__(self, *, run_dir: str | Path, cfg, enabled: bool = True, resume_id: str | None = None,
                 console: Console | None = None, job_type: str = "train", wandb_module=None):
        self.run_dir = Path(run_dir)
        self.cfg = cfg
        self.enabled = enabled
        self.job_type = job_type
        self.console = console or Console()
        self.wandb_id: str | None = None
        self.csv_path = self.run_dir / "metrics.csv"
        self._tb = None
        self._wandb = None
        self._rows: list[dict] = []
        self._best: dict[str, tuple[float, int]] = {}
        self._step: int | None = None   # latest step given to log(); None until then
        self._closed = False
        self._wandb_module = wandb_module            # a stand-in for `import wandb` (tests); see _wandb_lib
        self._has_key: bool | None = None            # see _key_known
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if cfg.tracking.csv and self.csv_path.is_file():
            self._rows = _read_csv(self.csv_path)   # a resumed run keeps its history
        if cfg.tracking.tensorboard:
            self._tb = self._open_tensorboard()
        # resolved once, before wandb is imported: a disabled wandb (config or WANDB_MODE) is never imported
        mode, project, entity = wandb_target(cfg.tracking.wandb, os.environ, self._key_known)
        if mode != "disabled":
            self._wandb = self._open_wandb(mode, project, entity, resume_id)
            self.wandb_id = self._wandb.id if self._wandb is not None else None

    @classmethod
    def for_report(cls, run_dir: str | Path, *, sinks, console: Console | None = None) -> "Tracker":
        """A tracker that adds to what a training left in `run_dir`: its TensorBoard folder, and its wandb run
        (resumed by id when run_dir/wandb holds one), with its config.yaml when there is one. wandb is offline
        whatever the training used: a report never waits on a network; `wandb sync` uploads it later."""
        from ..config import ConfigError, load_config

        run_dir = Path(run_dir)
        flags = [f"tracking.tensorboard={'tensorboard' in sinks}", "tracking.csv=false", "tracking.progress=false",
                 f"tracking.wandb.mode={'offline' if 'wandb' in sinks else 'disabled'}"]
        saved = run_dir / "config.yaml"
        try:
            cfg = load_config(saved if saved.is_file() else None, flags)
        except ConfigError:   # written by another version of multitask: its tracking settings are not needed
            cfg = load_config(None, flags)
        return cls(run_dir=run_dir, cfg=cfg, resume_id=wandb_run_id(run_dir), console=console, job_type="report")

    @property
    def sinks(self) -> list[str]:
        """The sinks that are open: tensorboard, wandb."""
        return [name for name, sink in (("tensorboard", self._tb), ("wandb", self._wandb)) if sink is not None]

    # ------------------------------------------------------------------------------------------ sinks
    def _open_tensorboard(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            self._warn(f"tensorboard unavailable ({err}); set tracking.tensorboard=false to hide this")
            return None
        return SummaryWriter(log_dir=str(self.run_dir / "tb"))

    def _wandb_lib(self):
        """The wandb module: the stand-in given to __init__ (tests), else `import wandb` (ImportError: not installed)."""
        # before wandb reads its environment: no banners, and never an interactive prompt
        os.environ.setdefault("WANDB_SILENT", "true")
        if self._wandb_module is None:
            import wandb

            self._wandb_module = wandb
        return self._wandb_module

    def _key_known(self) -> bool:
        """Whether wandb has an API key (WANDB_API_KEY or `wandb login`): looked up on first use, then remembered."""
        if self._has_key is None:
            try:
                self._has_key = _has_wandb_key(self._wandb_lib())
            except ImportError:   # _open_wandb says so
                self._has_key = False
        return self._has_key

    def _open_wandb(self, mode: str, project: str, entity: str | None, resume_id: str | None):
        try:
            wandb = self._wandb_lib()
        except ImportError as err:
            self._warn(f"wandb unavailable ({err}); set tracking.wandb.mode=disabled to hide this")
            return None
        w = self.cfg.tracking.wandb
        if mode == "online" and not self._key_known():
            self._warn("wandb: no API key (set WANDB_API_KEY or run `wandb login`); logging offline instead")
            mode = "offline"
        timeout = float(os.environ.get("WANDB_INIT_TIMEOUT", WANDB_INIT_TIMEOUT))
        settings = wandb.Settings(init_timeout=timeout, silent=True, console="off")
        kwargs = dict(project=project, entity=entity, group=w.group, tags=list(w.tags) or None,
                      name=w.name or f"{self.cfg.name}/{self.run_dir.name}", config=to_dict(self.cfg),
                      dir=str(self.run_dir), job_type=self.job_type, reinit="create_new", settings=settings)
        kwargs.update(self._fold_grouping())   # a k-fold sub-run: its fold as the job type
        if resume_id:
            kwargs.update(id=resume_id, resume="allow")
        for attempt in (["online", "offline"] if mode == "online" else [mode]):
            try:
                run = wandb.init(mode=attempt, **kwargs)
                self._define_wandb_metrics(run)
                return run
            except Exception as err:  # wandb raises its own CommError/UsageError/...: none may stop training
                fallback = "logging offline instead" if attempt == "online" else "going on without wandb"
                self._warn(f"wandb {attempt} init failed ({_short(err)}); {fallback}")
        return None

    def _wandb_call(self, fn, *args, **kwargs) -> None:
        try:
            fn(*args, **kwargs)
        except Exception as err:  # a failing wandb is switched off, the run goes on
            self._warn(f"wandb failed ({_short(err)}); going on without it")
            self._wandb = None

    def _warn(self, message: str) -> None:
        if self.enabled:
            self.console.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)

    # ------------------------------------------------------------------------------------------ logging
    def log(self, metrics: dict[str, float], *, step: int) -> None:
        if not self.enabled or self._closed:
            return
        self._step = step if self._step is None else max(self._step, step)
        self._emit({k: float(v) for k, v in metrics.items()}, step)

    def _emit(self, values: dict[str, float], step: int) -> None:
        if self._tb is not None:
            for key, value in values.items():
                self._tb.add_scalar(key, value, global_step=step)
        if self._wandb is not None:
            self._wandb_call(self._wandb.log, values, step=step)

    def log_epoch(self, epoch: int, metrics: dict[str, float], *, step: int | None = None) -> None:
        """One metrics.csv row (epoch + every key) and the same values to TensorBoard/wandb at `step`.

        Default step: the latest step given to `log` (epoch curves share the training step axis), or the epoch
        itself when nothing logged per step (then pass step=epoch to log_confusion as well: wandb drops steps
        that go backwards)."""
        if not self.enabled or self._closed:
            return
        values = {k: float(v) for k, v in metrics.items()}
        if self.cfg.tracking.csv:
            # a resumed run rewrites history from its epoch on
            self._rows = [r for r in self._rows if int(r["epoch"]) < epoch] + [{"epoch": epoch, **values}]
            _write_csv(self.csv_path, self._rows)
        if step is None:
            step = epoch if self._step is None else self._step
        self._emit({**values, "epoch": float(epoch)}, step)
        if self._tb is not None:
            self._tb.flush()

    def log_confusion(self, name: str, matrix: np.ndarray, class_names: list[str], *, step: int) -> None:
        if not self._open_sinks():
            return
        from ..analysis.report.figures import confusion_rgb  # the report's figure: one look in both places

        self._log_rgb({f"confusion/{name}": confusion_rgb(matrix, class_names, name)}, step)

    def log_images(self, images: Mapping[str, bytes], *, step: int | None = None) -> None:
        """PNG images by key: TensorBoard images (at `step`, else 0) and wandb images (at `step`, else wandb's
        own next step: a resumed run's step counter is not known here)."""
        if not self._open_sinks() or not images:
            return
        self._log_rgb({key: _png_to_rgb(png) for key, png in images.items()}, step)

    def _log_rgb(self, arrays: Mapping[str, np.ndarray], step: int | None) -> None:
        """RGB images, (height, width, 3) uint8 arrays by key, to the open sinks (steps as in `log_images`)."""
        if self._tb is not None:
            for key, image in arrays.items():
                self._tb.add_image(key, image, global_step=step or 0, dataformats="HWC")
        if self._wandb is not None:
            wandb = self._wandb_lib()
            self._wandb_log({key: wandb.Image(image) for key, image in arrays.items()}, step)

    def log_tables(self, tables: Mapping[str, tuple[Sequence[str], Sequence[Sequence]]], *,
                   step: int | None = None) -> None:
        """(columns, rows) by key: TensorBoard text (a Markdown table) and wandb Tables. Cells are shown as str()."""
        if not self._open_sinks() or not tables:
            return
        if self._tb is not None:
            for key, (columns, rows) in tables.items():
                cells = [[str(v) for v in row] for row in rows]   # str(), as wandb gets them
                self._tb.add_text(key, "\n".join(md_table([str(c) for c in columns], cells)), global_step=step or 0)
        if self._wandb is not None:
            wandb = self._wandb_lib()
            self._wandb_log({key: wandb.Table(columns=[str(c) for c in columns],
                                              data=[[str(v) for v in row] for row in rows])
                             for key, (columns, rows) in tables.items()}, step)

    def log_summary(self, values: Mapping[str, float]) -> None:
        """Final numbers of a run: TensorBoard scalars at step 0, the wandb run's summary."""
        if not self._open_sinks() or not values:
            return
        if self._tb is not None:
            for key, value in values.items():
                self._tb.add_scalar(key, float(value), global_step=0)
        if self._wandb is not None:
            self._wandb_call(self._wandb.summary.update, {k: float(v) for k, v in values.items()})

    def _open_sinks(self) -> bool:
        return self.enabled and not self._closed and (self._tb is not None or self._wandb is not None)

    def _wandb_log(self, payload: dict, step: int | None) -> None:
        if step is None:
            self._wandb_call(self._wandb.log, payload)
        else:
            self._wandb_call(self._wandb.log, payload, step=step)

    # ------------------------------------------------------------------------------------------ console
    def print(self, *args, **kwargs) -> None:
        if self.enabled:
            # soft wrap: a log file keeps each message (and its paths) on one line
            kwargs.setdefault("soft_wrap", True)
            self.console.print(*args, **kwargs)

    def epoch_table(self, epoch: int, metrics: dict[str, float], heads: list[str]) -> Table | None:
        """Per-head losses, accuracy, macro F1 (best so far marked) and per-class F1, printed on rank 0."""
        if not self.enabled:
            return None
        # compact enough for an 80-column terminal: losses in one cell, 3 decimals, a light box
        table = Table(title=f"epoch {epoch}", title_justify="left", header_style="bold", box=box.SIMPLE_HEAD,
                      pad_edge=False)
        for column in ("head", "loss tr/val", "acc", "F1", "best", "per-class F1"):
            table.add_column(column, justify="left" if column in ("head", "per-class F1") else "right",
                             no_wrap=column != "per-class F1")
        rows = list(heads) + (["composite"] if any(k.startswith("val/composite/") for k in metrics) else [])
        for head in rows:
            f1 = metrics.get(f"val/{head}/f1")
            best_cell, f1_cell = "", _num(f1)
            if f1 is not None and math.isfinite(f1):
                best, _ = self._best.get(head, (-math.inf, epoch))
                if f1 >= best:
                    self._best[head] = (f1, epoch)
                    f1_cell = f"[bold green]{f1:.3f}*[/]"
                best_cell = "{:.3f} e{}".format(*self._best[head])
            losses = "/".join(_num(metrics.get(f"{split}/{head}/loss")) or "-" for split in ("train", "val"))
            table.add_row(head, "" if head == "composite" else losses, _num(metrics.get(f"val/{head}/acc")),
                          f1_cell, best_cell, _per_class(metrics, head))
        extra = [f"{k} {metrics[k]:.4g}" for k in ("train/loss", "val/loss", "val/mean/f1", "lr") if k in metrics]
        table.caption = "  ".join(extra) + ("  (* best so far)" if extra else "* best so far")
        table.caption_justify = "left"
        self.console.print(table)
        return table

    def progress(self, total: int, description: str):
        """Context manager: `.update(n_images, loss=None)` per batch; a silent no-op when progress is off."""
        if not (self.enabled and self.cfg.tracking.progress):
            return contextlib.nullcontext(_SilentProgress())
        return _Progress(self.console, total=total, description=description)

    # ------------------------------------------------------------------------------------------ end
    def close(self, exit_code: int = 0) -> None:
        """Flush and close the sinks; publishes nothing (that is `publish_final`, at a normal end of training)."""
        if self._closed:
            return
        self._closed = True
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            run, self._wandb = self._wandb, None
            try:
                run.finish(exit_code=exit_code)
            except Exception as err:
                self._warn(f"wandb finish failed ({_short(err)})")

    # ------------------------------------------------------------------------------------------ wandb as expected
    def _fold_grouping(self) -> dict:
        """A k-fold sub-run (<run>/foldK) joins the group of its run, with the fold as job type (config wins)."""
        name = self.run_dir.name
        if not FOLD_DIR.fullmatch(name):
            return {}
        w = self.cfg.tracking.wandb
        return {"group": w.group or f"{self.cfg.name}/{self.run_dir.parent.name}", "job_type": name}

    def _define_wandb_metrics(self, run) -> None:
        """The epoch is the x axis; the summary keeps each metric's best (max F1 / accuracy, min loss), not its last
        value, so run tables and wandb sweeps rank runs by their best epoch."""
        run.define_metric("epoch", hidden=True)
        run.define_metric("*", step_metric="epoch")
        names = [h.name for h in self.cfg.trained_heads()] + ["composite", "mean"]
        for head in names:
            run.define_metric(f"val/{head}/f1", summary="max")
            run.define_metric(f"val/{head}/acc", summary="max")
            run.define_metric(f"val/{head}/loss", summary="min")
            run.define_metric(f"train/{head}/loss", summary="min")
        for key in ("val/loss", "train/loss"):
            run.define_metric(key, summary="min")

    def publish_final(self, best_metrics: Mapping[str, float], best_epoch: int | None, *,
                      best_value: float | None = None) -> None:
        """TensorBoard hparams with the best epoch's metrics, and wandb artifacts best.pt and oof.csv.

        The engine calls it once, after its last epoch: a run that crashed, was interrupted or pruned publishes
        nothing. `best_metrics` / `best_epoch`: the epoch best.pt holds, as the engine found it. Empty after a resume
        whose epochs did not improve: the best epoch was trained by an earlier process, and `best_value` (the
        monitored value restored with the checkpoint) finds its row in metrics.csv; without that row only the
        monitored value is published, with no epoch."""
        if not self.enabled or self._closed:
            return
        if not best_metrics and best_value is not None:
            best_epoch, best_metrics = self._earlier_best(best_value)
        if not best_metrics:
            return
        best = {f"best/{k}": float(v) for k, v in best_metrics.items() if k.startswith("val/") and "/f1_" not in k}
        if best_epoch is not None:
            best["best/epoch"] = float(best_epoch)
        if self._tb is not None:
            try:
                self._tb.add_hparams(hparams_of(self.cfg), best, run_name=".")
            except Exception as err:   # a figure is never worth a failed run
                self._warn(f"tensorboard hparams not written ({_short(err)})")
        if self._wandb is not None and self.cfg.tracking.wandb.artifacts:
            self._wandb_call(self._log_artifacts, best)

    def _earlier_best(self, value: float) -> tuple[int | None, dict[str, float]]:
        """(epoch, metrics) of the first metrics.csv row where the monitored metric has `value` (the first epoch to
        reach it is the one best.pt holds); (None, {monitor: value}) when no row has it."""
        from ..train.state import resolve_monitor

        monitor = resolve_monitor(self.cfg)
        row = next((r for r in self._rows if r.get(monitor) == value), None)
        if row is None:
            return None, {monitor: value}
        return int(row["epoch"]), {k: v for k, v in row.items() if k != "epoch"}

    def _log_artifacts(self, best: dict[str, float]) -> None:
        wandb = self._wandb_lib()
        base = "-".join(p for p in (self.cfg.name, *self.run_dir.parts[-2:]) if p)
        base = "".join(c if c.isalnum() or c in "-_." else "-" for c in base)
        for kind, file in (("model", "best.pt"), ("predictions", "oof.csv")):
            path = self.run_dir / file
            if path.is_file():
                artifact = wandb.Artifact(f"{base}-{kind}", type=kind, metadata=best)
                # immutable: no staging copy of a checkpoint that may weigh hundreds of MB; the run is over
                artifact.add_file(str(path), policy="immutable")
                self._wandb.log_artifact(artifact, aliases=["best", "latest"])

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, kind, value, tb) -> None:
        self.close(exit_code=0 if kind is None else 1)


# ---------------------------------------------------------------------------------------------- progress bar
class _SilentProgress:
    def update(self, n_images: int, loss: float | None = None) -> None:
        pass


class _Progress:
    """rich bar: batches, loss, img/s, ETA. `update` only counts; rich is touched at most 4 times a second."""

    def __init__(self, console: Console, *, total: int, description: str):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.total = total
        self.batches = self.images = 0
        self.loss: float | None = None
        self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[speed]} img/s"),
                             TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                             console=console, refresh_per_second=4)
        self._task = self._bar.add_task(description, total=total, loss="-", speed="-")
        self._start = self._last = time.perf_counter()

    def __enter__(self) -> "_Progress":
        self._bar.start()
        self._start = self._last = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self._push(time.perf_counter())
        self._bar.stop()

    def update(self, n_images: int, loss: float | None = None) -> None:
        self.batches += 1
        self.images += n_images
        if loss is not None:
            self.loss = float(loss)
        now = time.perf_counter()
        if now - self._last >= 0.25 or self.batches >= self.total:
            self._push(now)

    def _push(self, now: float) -> None:
        self._last = now
        speed = self.images / max(now - self._start, 1e-9)
        self._bar.update(self._task, completed=self.batches, speed=f"{speed:,.0f}",
                         loss="-" if self.loss is None else f"{self.loss:.4f}")


# ---------------------------------------------------------------------------------------------- helpers
def wandb_run_id(run_dir: Path) -> str | None:
    """The id of the newest wandb run in run_dir/wandb (its folders are named ...-run-<date>_<time>-<id>)."""
    runs = sorted(Path(run_dir).glob("wandb/*run-*-*"), key=lambda d: d.stat().st_mtime)
    return runs[-1].name.rsplit("-", 1)[-1] if runs else None


def _png_to_rgb(png: bytes) -> np.ndarray:
    import cv2

    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "not a PNG image"
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


WANDB_MODES = {"online": "online", "run": "online", "offline": "offline", "dryrun": "offline",
               "disabled": "disabled"}


def wandb_target(w, environ, has_key) -> tuple[str, str, str | None]:
    """(mode, project, entity): the config's where set; else wandb's own environment (WANDB_MODE, WANDB_PROJECT,
    WANDB_ENTITY); else online when an API key is known (WANDB_API_KEY or `wandb login`), offline otherwise."""
    mode = w.mode or WANDB_MODES.get(environ.get("WANDB_MODE", "").strip().lower())
    if mode is None:
        mode = "online" if has_key() else "offline"
    project = w.project or environ.get("WANDB_PROJECT") or "multitask"
    return mode, project, w.entity or environ.get("WANDB_ENTITY") or None


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


def _has_wandb_key(wandb) -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:  # reads netrc / settings; prompt=False never asks, verify=False never touches the network
        return bool(wandb.login(prompt=False, verify=False))
    except Exception:
        return False


def _short(err: BaseException, limit: int = 160) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _num(value) -> str:
    return "" if value is None else f"{value:.3f}"


def _per_class(metrics: dict[str, float], head: str) -> str:
    prefix = f"val/{head}/f1_"
    scores = [(k[len(prefix):], v) for k, v in metrics.items() if k.startswith(prefix)]
    if len(scores) > 6:  # e.g. the 18 composite classes: the worst one says more than a wall of numbers
        name, value = min(scores, key=lambda s: s[1])
        return f"{len(scores)} classes, worst {name} {value:.2f}"
    return " ".join(f"{name[:9]} {value:.2f}" for name, value in scores)


def _read_csv(path: Path) -> list[dict]:
    rows = []
    with open(path, newline="") as f:
        for raw in csv.DictReader(f):
            row = {k: float(v) for k, v in raw.items() if k and v not in (None, "")}
            if "epoch" in row:
                row["epoch"] = int(row["epoch"])
                rows.append(row)
    return rows


def _write_csv(path: Path, rows: list[dict]) -> None:
    """Header = union of keys in first-seen order; written to a temp file and renamed (never half a file)."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    try:
        with atomic_write(path, newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
    except OSError as err:   # disk full, run dir gone read-only: say so in one line; the old file stays
        raise UserError(f"could not write {path}: {err.strerror or err}; the previous metrics.csv is intact") from None
