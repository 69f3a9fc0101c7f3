"""Hyper-parameter sweeps on Optuna: every trial an ordinary run dir, one study that any number of workers fill.

    multitask sweep --config configs/quickstart.yaml --space configs/sweeps/optimizer.yaml --trials 20
    multitask sweep ... --trials 40                # the same command again: continues the study (kill-safe)
    multitask sweep ... --trials 40 --jobs 2       # two trials at a time on this machine (processes)
    multitask sweep ... --storage postgresql://user@db/sweeps   # the same command on each machine: one study

The study lives in runs/<name>/sweep/study.db (SQLite) unless --storage names another database. Trial N trains in
runs/<name>/sweep/N/ (config.yaml, metrics.csv, checkpoints, TensorBoard, wandb grouped by the study), so `predict`,
`report` and `train --resume` work on it as on any run. The objective is `train.monitor` at the best epoch; a
pruner (median, successive halving, hyperband) stops weak trials from their per-epoch validation.

`--trials N` is the study's size: a worker starts another trial while fewer than N are finished or running (failed
trials count when their config was bad; `--jobs J` may overshoot by up to J-1). A worker killed mid-trial (kill -9,
a lost machine) leaves its trial RUNNING: the next worker on the same machine sees the dead process at once, another
machine after the heartbeat's grace period (180 s; the environment's MULTITASK_SWEEP_GRACE_S=N makes it N, with a
beat every N/3 s); the trial is then marked failed and queued again with the same parameters, and resumes from its
last.pt when that run dir is on the machine that picks it up.

A study is made for one base config (the command's config and overrides with the space's `fixed` values, less the
keys that only say where data and outputs live) and one space: the first run stamps their digest on it, and a later
command giving others is refused before any trial, naming the first difference (give another --name for a new
study). `--seed` seeds the sampler together with the number of trials the study holds, so rerunning the command draws
new points. Every message shows a --storage URL with its password as ***.

At the end: trials.csv, best.yaml (train it with `multitask train --config runs/<name>/sweep/best.yaml`), PNG plots
and a table of the best trials (sweep_summary.py).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import socket
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import TrialState
from sqlalchemy import exc as sqlalchemy_exc
from sqlalchemy.engine import make_url

from ..config import Config, load_config
from ..runs.locks import pid_alive
from ..runs.resume import what_trains
from ..train.run import preflight
from ..utils.errors import UserError
from ..utils.io import failure_cause
from .space import Space, load_space

HEARTBEAT_S, GRACE_S = 60, 180      # a trial silent for GRACE_S is taken as dead (another machine's worker)
GRACE_ENV = "MULTITASK_SWEEP_GRACE_S"   # a shorter grace period (tests, a cluster that wants dead workers seen sooner)
SCHEMA_TRIES = 5                    # opening a fresh server database while other workers make its tables
MAX_RETRIES = 2                     # a trial killed this often is left failed (it may be what kills its worker)
PRUNERS = ("median", "halving", "hyperband", "none")


@dataclass
class Sweep:
    """One sweep as the command line gives it; workers rebuild each trial's config from it."""
    config: str
    space_path: str
    trials: int
    overrides: list[str] = field(default_factory=list)
    name: str | None = None
    storage: str | None = None
    pruner: str = "median"
    jobs: int = 1
    seed: int | None = None

    def __post_init__(self) -> None:
        self.space: Space = load_space(self.space_path)
        base = self.build([])
        self.name = self.name or base.name
        self.dir = Path(base.output_dir) / self.name / "sweep"
        if self.storage is not None:
            check_storage(self.storage)
        self.storage = self.storage or f"sqlite:///{(self.dir / 'study.db').resolve()}"

    def arguments(self) -> dict:
        """The fields that rebuild this sweep in another process (a --jobs worker): Sweep(**arguments)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def build(self, param_overrides: list[str]) -> Config:
        """The trial's config: the base config + command-line overrides + the sampled values; UserError if bad."""
        cfg = load_config(self.config, list(self.overrides) + param_overrides)
        preflight(cfg)
        return cfg


def open_study(sweep: Sweep, *, worker: int = 0):
    """(study, storage): created on first use, loaded after that."""
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.ERROR)   # a line per trial comes from here, not optuna's logger
    if sweep.storage.startswith("sqlite:///"):
        Path(sweep.storage[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    kwargs = {"connect_args": {"timeout": 60}} if sweep.storage.startswith("sqlite") else {}
    heartbeat, grace = heartbeat_timing()
    try:
        storage = _rdb_storage(sweep.storage, kwargs, heartbeat, grace)
    except Exception as err:   # a bad URL, an unreachable server, a missing driver
        raise UserError(f"--storage {shown(sweep.storage)}: cannot open the study database "
                        f"({masked(str(err), sweep.storage)})") from None
    pruner = {"median": lambda: optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2),
              "halving": lambda: optuna.pruners.SuccessiveHalvingPruner(),
              "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=1),
              "none": lambda: optuna.pruners.NopPruner()}[sweep.pruner]()
    sampler = optuna.samplers.TPESampler(seed=sampler_seed(sweep, storage, worker), multivariate=True, group=True,
                                         constant_liar=True)
    study = optuna.create_study(study_name=sweep.name, storage=storage, direction="maximize", sampler=sampler,
                                pruner=pruner, load_if_exists=True)
    return study, storage


def _rdb_storage(url: str, engine_kwargs: dict, heartbeat: int, grace: int):
    """optuna's storage on `url`. Workers started at once on an empty database server all create optuna's tables,
    and all but one fail on the other's (a duplicate type or table): those try again, finding the tables made."""
    for attempt in range(SCHEMA_TRIES):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat,
                                              grace_period=grace, heartbeat_stale_trial_callback=requeue)
        except (sqlalchemy_exc.IntegrityError, sqlalchemy_exc.ProgrammingError):
            if attempt == SCHEMA_TRIES - 1 or url.startswith("sqlite"):   # SQLite has no such race: a real error
                raise
            time.sleep(0.2 * (attempt + 1))


def heartbeat_timing() -> tuple[int, int]:
    """(heartbeat interval, grace period) in seconds: 60 and 180, or GRACE_ENV's grace with a beat a third as long
    (a worker then misses two beats before its trial is taken as dead)."""
    text = os.environ.get(GRACE_ENV, "").strip()
    if not text:
        return HEARTBEAT_S, GRACE_S
    if not text.isdigit() or int(text) < 3:
        raise UserError(f"{GRACE_ENV}={text}: expected a whole number of seconds, at least 3 (the default is "
                        f"{GRACE_S})")
    grace = int(text)
    return min(HEARTBEAT_S, grace // 3), grace


@contextlib.contextmanager
def storage_errors(sweep: Sweep):
    """A write the study database refuses (a full disk, a file-size limit, a server gone) ends the sweep with one line
    naming the database and why, instead of optuna's internal error."""
    try:
        yield
    except optuna.exceptions.StorageInternalError as err:
        raise storage_failure(sweep, err) from None


def storage_failure(sweep: Sweep, err: BaseException) -> UserError:
    """The one line for optuna's StorageInternalError: which database, and why (a file-size limit, a full disk)."""
    root = err
    while root.__cause__ is not None:   # optuna's error <- SQLAlchemy's <- the driver's own words
        root = root.__cause__
    local = sweep.storage.startswith("sqlite:///")
    folder = Path(sweep.storage[len("sqlite:///"):]).parent if local else Path.cwd()
    return UserError(f"the study database {shown(sweep.storage)} could not be written: "
                     f"{masked(failure_cause(folder, root), sweep.storage)}; the trials it holds are kept; fix that "
                     f"and rerun the command to continue")


def sampler_seed(sweep: Sweep, storage, worker: int) -> int | None:
    """--seed, mixed with the worker's number and the trials the study holds already: workers of one seed, and a
    rerun of the command, would otherwise draw the points drawn before (the sampler's random start repeats)."""
    if sweep.seed is None:
        return None
    try:
        held = len(storage.get_all_trials(storage.get_study_id_from_name(sweep.name), deepcopy=False))
    except KeyError:   # a new study
        held = 0
    return int(np.random.SeedSequence([sweep.seed, worker, held]).generate_state(1)[0])


def check_storage(url: str) -> None:
    """An in-memory SQLite URL keeps nothing (and its heartbeat thread fails on another connection): refused."""
    try:
        parsed = make_url(url)
    except Exception:   # not a URL at all: opening it says so
        return
    memory = parsed.get_backend_name() == "sqlite" and (parsed.database in (None, "", ":memory:")
                                                        or "mode=memory" in url or ":memory:" in url)
    if memory:
        raise UserError(f"--storage {shown(url)}: an in-memory SQLite database keeps no study (nothing would be "
                        f"saved, and other workers cannot reach it); give a file (sqlite:///path/study.db) or "
                        f"leave --storage out for runs/<name>/sweep/study.db")


PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)[^@\s]*@")


def shown(url: str) -> str:
    """The storage URL as every message shows it: the password replaced by ***."""
    return PASSWORD.sub(r"\g<head>***@", url)


def masked(text: str, url: str) -> str:
    """`text` (a database driver's error, say) with the URL's password replaced by ***, wherever it appears."""
    try:
        password = make_url(url).password
    except Exception:
        password = None
    text = shown(text)   # every URL in it
    # the bare password too (a driver may quote it), unless so short that replacing it would garble the words
    return text.replace(str(password), "***") if password and len(str(password)) >= 4 else text


def space_digest(sweep: Sweep, base: Config) -> tuple[str, dict]:
    """(digest, what it digests) of what a study's trials mean: the base config (the space's fixed values and the
    command-line overrides in) without the keys that only say where, and the space's params."""
    params = {p.key: {k: v for k, v in dataclasses.asdict(p).items() if k != "key"} for p in sweep.space.params}
    what = {"config": what_trains(base), "params": params}
    text = json.dumps(what, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16], json.loads(text)


def check_study(study, sweep: Sweep, base: Config) -> None:
    """A study is made for one base config and space: stamped with their digest when new, refused (one line naming
    the first difference) when the command now gives others. Mixing them would compare trials that differ in more
    than their parameters, or stop mid-way on optuna's changed value space."""
    digest, what = space_digest(sweep, base)
    stored = study.user_attrs.get("digest")
    if stored is None:   # a new study (or one made before studies were stamped)
        study.set_user_attr("digest", digest)
        study.set_user_attr("made_with", what)
        return
    if stored == digest:
        return
    before = study.user_attrs.get("made_with") or {}
    diff = _first_difference(before, what)
    raise UserError(f"--name {sweep.name}: the study in {shown(sweep.storage)} was made with another base config or "
                    f"space{f' ({diff})' if diff else ''}; rerun with the config, overrides and space it was made "
                    f"with, or give another --name for a new study")


def _first_difference(before: dict, now: dict) -> str:
    for part, what in (("config", "config"), ("params", "space param")):
        old, new = before.get(part, {}), now.get(part, {})
        for key in list(dict.fromkeys([*old, *new])):
            if old.get(key) != new.get(key):
                show = lambda v: "unset" if v is None else json.dumps(v, default=str)  # noqa: E731
                return f"{what} {key}: {show(old.get(key))} then, {show(new.get(key))} now"
    return ""


def requeue(study, trial) -> None:
    """A trial whose worker died: queue it again with the same parameters (and its run dir, to resume from)."""
    retries = int(trial.user_attrs.get("retries", 0)) + 1
    if retries > MAX_RETRIES:
        return
    study.enqueue_trial(trial.params, user_attrs={
        "retry_of": trial.number, "retries": retries, "resume_dir": trial.user_attrs.get("run_dir"),
        "resume_host": trial.user_attrs.get("host")})


def reap_local(study, storage) -> list[int]:
    """RUNNING trials of this machine whose process is gone (killed): failed and queued again now."""
    host, reaped = socket.gethostname(), []
    study_id = storage.get_study_id_from_name(study.study_name)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = t.user_attrs.get("pid")
        if t.user_attrs.get("host") != host or pid is None or pid_alive(int(pid)):
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        try:
            storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
        except Exception:   # another worker got there first
            continue
        requeue(study, storage.get_trial(trial_id))
        reaped.append(t.number)
    return reaped


def requeue_interrupted(study) -> list[int]:
    """Trials stopped by Ctrl-C (failed, marked interrupted, not yet queued again)."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    out = []
    for t in trials:
        if t.state == TrialState.FAIL and t.user_attrs.get("interrupted") and t.number not in retried:
            requeue(study, t)
            out.append(t.number)
    return out


def counted(study) -> tuple[int, int]:
    """(trials that count towards --trials, trials waiting in the queue)."""
    n = waiting = 0
    for t in study.get_trials(deepcopy=False):
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING):
            n += 1
        elif t.state == TrialState.FAIL and "fail_reason" in t.user_attrs:
            n += 1
        elif t.state == TrialState.WAITING:
            waiting += 1
    return n, waiting
