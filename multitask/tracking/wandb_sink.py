"""wandb as its users expect: its own environment when the config is silent, an epoch axis, best-epoch summaries,
artifacts at a normal end, k-fold runs grouped by their run. Offline unless a key says otherwise; never a reason
for a training to stop.

    sink = WandbSink.open(run_dir, cfg, warn=print, resume_id=None)   # None: disabled, or wandb failed to start

Online mode falls back to offline when there is no API key or the server cannot be reached, and to nothing when
wandb fails altogether. A wandb call that raises later switches the sink off with one warning; the run goes on.
`import wandb` happens here and only when wandb is not disabled (it costs a second or two).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from ..config import to_dict
from ..config.metric_names import scored_sources, val_key
from ..runs.run_dir import BEST, OOF, WANDB, kfold_parent
from ..utils.errors import short_error
from .sink import Sink, Tables

WANDB_INIT_TIMEOUT = 30.0   # seconds; wandb's own default (90 s) is long to wait for a server that is not there
WANDB_MODES = {"online": "online", "run": "online", "offline": "offline", "dryrun": "offline",
               "disabled": "disabled"}


class WandbSink(Sink):
    name = "wandb"

    def __init__(self, run, wandb, cfg, run_dir: Path, warn: Callable[[str], None]):
        self.run, self.wandb, self.cfg, self.run_dir, self.warn = run, wandb, cfg, Path(run_dir), warn
        self.id: str = run.id   # kept after close: a checkpoint records it so a resume continues the same run

    @classmethod
    def open(cls, run_dir: Path, cfg, *, warn: Callable[[str], None], resume_id: str | None = None,
             job_type: str = "train") -> "WandbSink | None":
        # before wandb reads its environment: no banners, and never an interactive prompt
        os.environ.setdefault("WANDB_SILENT", "true")
        key = KeyLookup()
        mode, project, entity = wandb_target(cfg.tracking.wandb, os.environ, key)
        if mode == "disabled":   # decided before wandb is imported: a disabled wandb is never imported
            return None
        try:
            import wandb  # an optional cost: only a run that logs to wandb pays for the import
        except ImportError as err:
            warn(f"wandb unavailable ({err}); set tracking.wandb.mode=disabled to hide this")
            return None
        if mode == "online" and not key():
            warn("wandb: no API key (set WANDB_API_KEY or run `wandb login`); logging offline instead")
            mode = "offline"
        kwargs = init_kwargs(wandb, cfg, Path(run_dir), project, entity, job_type, resume_id)
        for attempt in (["online", "offline"] if mode == "online" else [mode]):
            try:
                run = wandb.init(mode=attempt, **kwargs)
                define_metrics(run, cfg)
                return cls(run, wandb, cfg, run_dir, warn)
            except Exception as err:  # wandb raises its own CommError/UsageError/...: none may stop training
                fallback = "logging offline instead" if attempt == "online" else "going on without wandb"
                warn(f"wandb {attempt} init failed ({short_error(err)}); {fallback}")
        return None

    def _call(self, fn, *args, **kwargs) -> None:
        if self.run is None:
            return
        try:
            fn(*args, **kwargs)
        except Exception as err:  # a failing wandb is switched off, the run goes on
            self.warn(f"wandb failed ({short_error(err)}); going on without it")
            self.run = None

    def _log(self, payload: dict, step: int | None) -> None:
        if self.run is not None:
            self._call(self.run.log, payload, **({} if step is None else {"step": step}))

    def log_scalars(self, values: Mapping[str, float], step: int | None) -> None:
        self._log(dict(values), step)

    def log_images(self, images: Mapping[str, np.ndarray], step: int | None) -> None:
        self._log({key: self.wandb.Image(image) for key, image in images.items()}, step)

    def log_tables(self, tables: Tables, step: int | None) -> None:
        self._log({key: self.wandb.Table(columns=[str(c) for c in columns], data=[[str(v) for v in row]
                                                                                  for row in rows])
                   for key, (columns, rows) in tables.items()}, step)

    def log_summary(self, values: Mapping[str, float]) -> None:
        if self.run is not None:
            self._call(self.run.summary.update, {k: float(v) for k, v in values.items()})

    def publish_final(self, best: Mapping[str, float]) -> None:
        if self.run is not None and self.cfg.tracking.wandb.artifacts:
            self._call(self._log_artifacts, dict(best))

    def _log_artifacts(self, best: dict[str, float]) -> None:
        base = "-".join(p for p in (self.cfg.name, *self.run_dir.parts[-2:]) if p)
        base = "".join(c if c.isalnum() or c in "-_." else "-" for c in base)
        for kind, file in (("model", BEST), ("predictions", OOF)):
            path = self.run_dir / file
            if path.is_file():
                artifact = self.wandb.Artifact(f"{base}-{kind}", type=kind, metadata=best)
                # immutable: no staging copy of a checkpoint that may weigh hundreds of MB; the run is over
                artifact.add_file(str(path), policy="immutable")
                self.run.log_artifact(artifact, aliases=["best", "latest"])

    def close(self, exit_code: int = 0) -> None:
        run, self.run = self.run, None
        if run is None:
            return
        try:
            run.finish(exit_code=exit_code)
        except Exception as err:
            self.warn(f"wandb finish failed ({short_error(err)})")


# ---------------------------------------------------------------------------------------------- opening
class KeyLookup:
    """Whether wandb has an API key (WANDB_API_KEY or `wandb login`): looked up on first use, then remembered."""

    def __init__(self):
        self.known: bool | None = None

    def __call__(self) -> bool:
        if self.known is None:
            self.known = has_wandb_key()
        return self.known


def has_wandb_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:  # reads netrc / settings; prompt=False never asks, verify=False never touches the network
        import wandb  # only asked when the environment leaves the mode to the key

        return bool(wandb.login(prompt=False, verify=False))
    except Exception:
        return False


def wandb_target(w, environ, has_key) -> tuple[str, str, str | None]:
    """(mode, project, entity): the config's where set; else wandb's own environment (WANDB_MODE, WANDB_PROJECT,
    WANDB_ENTITY); else online when an API key is known (WANDB_API_KEY or `wandb login`), offline otherwise."""
    mode = w.mode or WANDB_MODES.get(environ.get("WANDB_MODE", "").strip().lower())
    if mode is None:
        mode = "online" if has_key() else "offline"
    project = w.project or environ.get("WANDB_PROJECT") or "multitask"
    return mode, project, w.entity or environ.get("WANDB_ENTITY") or None


def init_kwargs(wandb, cfg, run_dir: Path, project: str, entity: str | None, job_type: str,
                resume_id: str | None) -> dict:
    w = cfg.tracking.wandb
    timeout = float(os.environ.get("WANDB_INIT_TIMEOUT", WANDB_INIT_TIMEOUT))
    kwargs = dict(project=project, entity=entity, group=w.group, tags=list(w.tags) or None,
                  name=w.name or f"{cfg.name}/{run_dir.name}", config=to_dict(cfg), dir=str(run_dir),
                  job_type=job_type, reinit="create_new",
                  settings=wandb.Settings(init_timeout=timeout, silent=True, console="off"))
    parent = kfold_parent(run_dir)
    if parent is not None:   # a k-fold sub-run joins the group of its run, with the fold as job type (config wins)
        kwargs.update(group=w.group or f"{cfg.name}/{parent.name}", job_type=run_dir.name)
    if resume_id:
        kwargs.update(id=resume_id, resume="allow")
    return kwargs


def define_metrics(run, cfg) -> None:
    """The epoch is the x axis; the summary keeps each metric's best (max F1 / accuracy, min loss), not its last
    value, so run tables and wandb sweeps rank runs by their best epoch."""
    run.define_metric("epoch", hidden=True)
    run.define_metric("*", step_metric="epoch")
    sources = scored_sources(cfg.data.resolved_sources())
    names = [h.name for h in cfg.trained_heads()] + ["composite", "mean"]
    for head in names:
        for source in sources:   # each source's own validation scores
            run.define_metric(val_key(f"{head}/f1", source), summary="max")
        run.define_metric(val_key(f"{head}/f1"), summary="max")
        run.define_metric(val_key(f"{head}/acc"), summary="max")
        run.define_metric(val_key(f"{head}/loss"), summary="min")
        run.define_metric(f"train/{head}/loss", summary="min")
    for key in (val_key("loss"), "train/loss"):
        run.define_metric(key, summary="min")


def wandb_run_id(run_dir: Path) -> str | None:
    """The id of the newest wandb run in run_dir/wandb (its folders are named ...-run-<date>_<time>-<id>)."""
    runs = sorted(Path(run_dir).glob(f"{WANDB}/*run-*-*"), key=lambda d: d.stat().st_mtime)
    return runs[-1].name.rsplit("-", 1)[-1] if runs else None
