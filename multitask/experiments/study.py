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
machine after the heartbeat's grace period; the trial is then marked failed and queued again with the same
parameters, and resumes from its last.pt when that run dir is on the machine that picks it up.

At the end: trials.csv, best.yaml (train it with `multitask train --config runs/<name>/sweep/best.yaml`), PNG plots
and a table of the best trials (sweep_summary.py).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..config import Config, load_config, to_dict
from ..runs.run_dir import pid_alive
from ..train.callbacks import Callback
from ..utils.errors import UserError
from .space import Space, check_space, load_space

HEARTBEAT_S, GRACE_S = 60, 180      # a trial silent for GRACE_S is taken as dead (another machine's worker)
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
        self.storage = self.storage or f"sqlite:///{(self.dir / 'study.db').resolve()}"

    def build(self, param_overrides: list[str]) -> Config:
        """The trial's config: the base config + command-line overrides + the sampled values; UserError if bad."""
        from ..train.run import preflight

        cfg = load_config(self.config, list(self.overrides) + param_overrides)
        preflight(cfg)
        return cfg


# --------------------------------------------------------------------------------------------------- study
def open_study(sweep: Sweep, *, worker: int = 0):
    """(study, storage): created on first use, loaded after that."""
    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.ERROR)   # a line per trial comes from here, not optuna's logger
    if sweep.storage.startswith("sqlite:///"):
        Path(sweep.storage[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    kwargs = {"connect_args": {"timeout": 60}} if sweep.storage.startswith("sqlite") else {}
    try:
        storage = optuna.storages.RDBStorage(sweep.storage, engine_kwargs=kwargs, heartbeat_interval=HEARTBEAT_S,
                                             grace_period=GRACE_S, heartbeat_stale_trial_callback=requeue)
    except Exception as err:   # a bad URL, an unreachable server, a missing driver
        raise UserError(f"--storage {sweep.storage}: cannot open the study database ({err})") from None
    pruner = {"median": lambda: optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2),
              "halving": lambda: optuna.pruners.SuccessiveHalvingPruner(),
              "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=1),
              "none": lambda: optuna.pruners.NopPruner()}[sweep.pruner]()
    seed = None if sweep.seed is None else sweep.seed + worker   # workers with one seed would draw the same points
    sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True)
    study = optuna.create_study(study_name=sweep.name, storage=storage, direction="maximize", sampler=sampler,
                                pruner=pruner, load_if_exists=True)
    return study, storage


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
    from optuna.trial import TrialState

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
    from optuna.trial import TrialState

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
    from optuna.trial import TrialState

    n = waiting = 0
    for t in study.get_trials(deepcopy=False):
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING):
            n += 1
        elif t.state == TrialState.FAIL and "fail_reason" in t.user_attrs:
            n += 1
        elif t.state == TrialState.WAITING:
            waiting += 1
    return n, waiting


# --------------------------------------------------------------------------------------------------- trials
class OptunaPruning(Callback):
    """Reports the monitored metric after each validation; raises TrialPruned when the pruner says so."""

    def __init__(self, trial, monitor: str):
        self.trial, self.monitor = trial, monitor

    def on_epoch_end(self, state, metrics):
        import optuna

        if self.monitor not in metrics:   # no validation this epoch (train.val_every)
            return
        value = float(metrics[self.monitor])
        self.trial.report(value, state.epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {state.epoch}: {self.monitor} {value:.4f}")


def run_trial(sweep: Sweep, trial, *, quiet: bool) -> float:
    """The objective: sample, build and validate the config, train (or resume) in the trial's run dir."""
    from ..train.run import fit, load_for_resume
    from ..train.state import resolve_monitor

    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("pid", os.getpid())
    values = sweep.space.sample(trial)
    cfg = sweep.build(sweep.space.overrides(values))
    trial.set_user_attr("config", to_dict(cfg))
    monitor = resolve_monitor(cfg)
    trial.set_user_attr("monitor", monitor)
    cfg.tracking.wandb.group = cfg.tracking.wandb.group or sweep.name
    cfg.tracking.wandb.name = cfg.tracking.wandb.name or f"{sweep.name}/trial{trial.number}"
    if quiet:
        cfg.tracking.progress = False    # parallel progress bars would garble one terminal
    run_dir, ckpt = sweep.dir / str(trial.number), None
    resume = trial.user_attrs.get("resume_dir")
    if resume and trial.user_attrs.get("resume_host") == socket.gethostname() and (Path(resume) / "last.pt").is_file():
        run_dir, ckpt = Path(resume), load_for_resume(Path(resume) / "last.pt", cfg)
        replay_history(trial, run_dir, monitor, upto=ckpt["epoch"])
    trial.set_user_attr("run_dir", str(run_dir))
    best = fit(cfg, run_dir, ckpt=ckpt, callbacks=[OptunaPruning(trial, monitor)])
    if monitor in best:
        return float(best[monitor])
    if ckpt is not None and ckpt.get("best") is not None:   # resumed a trial that had finished training
        return float(ckpt["best"])
    raise UserError(f"{monitor} was never validated (train.val_every > train.epochs?)")


def replay_history(trial, run_dir: Path, monitor: str, *, upto: int) -> None:
    """A resumed trial reports its earlier epochs again, so the pruner judges it on its whole curve."""
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return
    rows = pd.read_csv(path)
    if monitor in rows:
        for epoch, value in zip(rows["epoch"], rows[monitor]):
            if epoch <= upto and pd.notna(value):
                trial.report(float(value), int(epoch))


def objective(sweep: Sweep, *, quiet: bool):
    import optuna

    from ..cli import one_line

    def run(trial) -> float:
        try:
            return run_trial(sweep, trial, quiet=quiet)
        except optuna.TrialPruned:
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            raise
        except Exception as err:   # recorded on the trial; the sweep goes on with the next one
            trial.set_user_attr("fail_reason", one_line(err))
            raise
    return run


# --------------------------------------------------------------------------------------------------- workers
def work(sweep: Sweep, *, worker: int = 0, console=None, study=None) -> None:
    """Run trials until the study holds `sweep.trials` (finished or running) and none waits in the queue. `study`:
    the one run_sweep opened (this process's worker); a --jobs child process opens its own."""
    import optuna
    import torch

    from .summary import trial_line, trial_rows, write_trials_csv

    if sweep.jobs > 1:   # J trials share the cores instead of each starting one thread per core
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // sweep.jobs))
    if study is None:
        study, _ = open_study(sweep, worker=worker)
    if console is None:
        from rich.console import Console
        console = Console()
    say = lambda line: console.print(line, soft_wrap=True, highlight=False, markup=False)  # noqa: E731

    unexplained = []

    def after(study, trial) -> None:
        say(trial_line(trial))
        write_trials_csv(trial_rows(study), sweep.dir / "trials.csv")
        # a failure that could not even record its reason (a broken database) would not count: stop, not loop
        silent = trial.state.name == "FAIL" and not {"fail_reason", "interrupted"} & set(trial.user_attrs)
        unexplained[:] = unexplained + [trial.number] if silent else []
        if len(unexplained) >= 3:
            raise UserError(f"trials {', '.join(map(str, unexplained))} failed without recording why (is the study "
                            f"database {sweep.storage} writable?); stopping")

    while True:
        optuna.storages.fail_stale_trials(study)
        n, waiting = counted(study)
        if n >= sweep.trials and not waiting:
            return
        study.optimize(objective(sweep, quiet=sweep.jobs > 1), n_trials=1, catch=(Exception,), callbacks=[after],
                       gc_after_trial=True)


def run_sweep(sweep: Sweep, *, console=None) -> Path:
    """The `multitask sweep` command: check the space, open (or continue) the study, run the workers, summarise."""
    from rich.console import Console

    from .summary import summarise

    console = console or Console()
    base = check_space(sweep.space, sweep.build)   # the base config with the space's fixed values
    if sweep.trials < 1 or sweep.jobs < 1:
        raise UserError(f"--trials and --jobs must be >= 1, got {sweep.trials} and {sweep.jobs}")
    sweep.dir.mkdir(parents=True, exist_ok=True)
    study, storage = open_study(sweep)
    again = reap_local(study, storage) + requeue_interrupted(study)
    done, _ = counted(study)
    console.print(f"[bold]sweep[/] {sweep.name}: {done} of {sweep.trials} trials so far in {sweep.storage}"
                  + (f"; trial(s) {', '.join(map(str, again))} were cut short and run again" if again else ""),
                  highlight=False, soft_wrap=True)
    children = []
    if sweep.jobs > 1 and done < sweep.trials:
        from ..data.prepare import prepare_data
        prepare_data(base, log=lambda _: None)   # synthetic data and image cache once, not per worker
        children = [spawn_worker(sweep, k) for k in range(1, sweep.jobs)]
    try:
        work(sweep, worker=0, console=console, study=study)
        for child in children:
            child.wait()
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()
                child.wait(timeout=30)
    return summarise(study, sweep, console=console)


def spawn_worker(sweep: Sweep, k: int) -> subprocess.Popen:
    """Worker k of --jobs: the same command in another process, trials only (the parent summarises)."""
    cmd = [sys.executable, "-m", "multitask", "sweep", "--config", sweep.config, "--space", sweep.space_path,
           "--trials", str(sweep.trials), "--name", sweep.name, "--storage", sweep.storage, "--pruner", sweep.pruner,
           "--jobs", str(sweep.jobs), "--worker", str(k)]
    if sweep.seed is not None:
        cmd += ["--seed", str(sweep.seed)]
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[1])   # the same multitask as this process, installed or not
    env["PYTHONPATH"] = os.pathsep.join([package_root, *filter(None, [env.get("PYTHONPATH")])])
    time.sleep(0.1 * k)   # stagger the first SQLite writes a little
    return subprocess.Popen(cmd + list(sweep.overrides), env=env)
