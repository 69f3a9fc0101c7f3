"""The workers of a sweep: this process, and with --jobs J the J-1 others it starts on this machine.

    run_sweep(sweep)                    # `multitask sweep`: check the space, run the workers, summarise
    python -m multitask.experiments '{"config": ...}' 1     # what run_sweep starts for worker 1 (__main__.py)

A --jobs worker gets the sweep's own fields as JSON (Sweep.arguments), not a command line rebuilt by hand: it runs
trials only; the parent summarises.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import torch
from rich.console import Console

from ..data.prepare import prepare_data
from ..utils.errors import UserError, one_line
from ..utils.plugins import load_plugins
from ..utils.signals import TERMINATED_EXIT, Terminated, sigterm_as_interrupt
from .space import check_space
from .study import Sweep, check_study, counted, open_study, reap_local, requeue_interrupted, shown, storage_errors
from .summary import summarise, trial_line, trial_rows, write_trials_csv
from .trial import objective


def work(sweep: Sweep, *, worker: int = 0, console=None, study=None) -> None:
    """Run trials until the study holds `sweep.trials` (finished or running) and none waits in the queue. `study`:
    the one run_sweep opened (this process's worker); a --jobs child process opens its own."""
    if sweep.jobs > 1:   # J trials share the cores instead of each starting one thread per core
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // sweep.jobs))
    if study is None:
        study, _ = open_study(sweep, worker=worker)
    console = console or Console()
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
                            f"database {shown(sweep.storage)} writable?); stopping")

    while True:
        optuna.storages.fail_stale_trials(study)
        n, waiting = counted(study)
        if n >= sweep.trials and not waiting:
            return
        study.optimize(objective(sweep, quiet=sweep.jobs > 1), n_trials=1, catch=(Exception,), callbacks=[after],
                       gc_after_trial=True)


def run_sweep(sweep: Sweep, *, console=None) -> Path:
    """The `multitask sweep` command: check the space, open (or continue) the study, run the workers, summarise."""
    console = console or Console()
    base = check_space(sweep.space, sweep.build)   # the base config with the space's fixed values
    if sweep.trials < 1 or sweep.jobs < 1:
        raise UserError(f"--trials and --jobs must be >= 1, got {sweep.trials} and {sweep.jobs}")
    with storage_errors(sweep):
        return _run_study(sweep, base, console)


def _run_study(sweep: Sweep, base, console) -> Path:
    """run_sweep's part that reads and writes the study."""
    study, storage = open_study(sweep)   # first: a refused --storage leaves no runs/<name>/sweep/ behind
    check_study(study, sweep, base)
    sweep.dir.mkdir(parents=True, exist_ok=True)
    if not study.trials:   # a new study: the space's first points before the sampler's own
        for point in sweep.space.first[:sweep.trials]:
            study.enqueue_trial(point)
    again = reap_local(study, storage) + requeue_interrupted(study)
    done, _ = counted(study)
    console.print(f"[bold]sweep[/] {sweep.name}: {done} of {sweep.trials} trials so far in {shown(sweep.storage)}"
                  + (f"; trial(s) {', '.join(map(str, again))} were cut short and run again" if again else ""),
                  highlight=False, soft_wrap=True)
    children = []
    if sweep.jobs > 1 and done < sweep.trials:
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
    """Worker k of --jobs: this module in another process, trials only (the parent summarises)."""
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])   # the folder holding this multitask, installed or not
    env["PYTHONPATH"] = os.pathsep.join([package_root, *filter(None, [env.get("PYTHONPATH")])])
    time.sleep(0.1 * k)   # stagger the first SQLite writes a little
    return subprocess.Popen([sys.executable, "-m", "multitask.experiments", json.dumps(sweep.arguments()), str(k)],
                            env=env)


def main(argv: list[str]) -> int:
    """A --jobs worker: the sweep's fields as JSON and the worker's number."""
    try:
        load_plugins()   # the parent's plugins (entry points, MULTITASK_PLUGINS) register here as well
        sweep = Sweep(**json.loads(argv[0]))
        with sigterm_as_interrupt(), storage_errors(sweep):   # a stopped worker records its trial as interrupted
            work(sweep, worker=int(argv[1]))
    except Terminated:
        return TERMINATED_EXIT
    except KeyboardInterrupt:
        return 130
    except Exception as err:   # the parent's terminal shows it, one line as anywhere else
        print(f"error: sweep worker {argv[1]}: {one_line(err)}", file=sys.stderr)
        return 2 if isinstance(err, (UserError, OSError)) else 1
    return 0
