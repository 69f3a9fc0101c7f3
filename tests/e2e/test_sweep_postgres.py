"""Sweeps on a real PostgreSQL server: two machines filling one study, a worker killed mid-trial and its trial taken
up by the heartbeat, a rerun that adds trials, the password kept out of every message.

The server: `eval "$(.ci/postgres.sh)"` (as root; .ci/run does it) exports MULTITASK_TEST_POSTGRES. Without that
variable these tests skip, except in CI (CI set, as .ci/run exports it), where they fail: a CI run that quietly skipped
them would pass without ever reaching a database. A set URL whose server does not answer fails everywhere.
"""
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest

optuna = pytest.importorskip("optuna")
sqlalchemy = pytest.importorskip("sqlalchemy")

from helpers import REPO, error_line, tiny_overrides  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from multitask.cli import main  # noqa: E402
from multitask.experiments.study import GRACE_ENV, Sweep, heartbeat_timing, masked, open_study, shown  # noqa: E402
from multitask.experiments.workers import run_sweep  # noqa: E402
from multitask.utils.errors import UserError  # noqa: E402

ROOT = REPO
QUICKSTART = str(ROOT / "configs" / "quickstart.yaml")
URL_ENV = "MULTITASK_TEST_POSTGRES"
GRACE = 6   # seconds: the kill test waits this long for the heartbeat to give up on the dead worker
LR_SPACE = "params:\n  train.lr: {low: 1.0e-3, high: 1.0e-2, log: true}\n"


@pytest.fixture(scope="module")
def server() -> str:
    """The server's URL; skipped without one outside CI, failed in CI or when the URL's server does not answer."""
    url = os.environ.get(URL_ENV)
    if not url:
        if os.environ.get("CI"):
            pytest.fail(f"{URL_ENV} is unset in CI: .ci/run starts the server with .ci/postgres.sh, which exports it")
        pytest.skip(f"no PostgreSQL server: eval \"$(sudo .ci/postgres.sh)\" starts one and exports {URL_ENV}")
    problem = None
    try:
        engine = sqlalchemy.create_engine(url)
        with engine.connect() as db:
            db.execute(sqlalchemy.text("select 1"))
        engine.dispose()
    except Exception as err:   # no driver, no server, a wrong password
        problem = " ".join(masked(str(err), url).split())
    if problem is not None:   # failed outside the except: a chained traceback would show the driver's arguments
        pytest.fail(f"{URL_ENV}={shown(url)}: cannot reach the server ({problem}); start it with .ci/postgres.sh",
                    pytrace=False)
    return url


@pytest.fixture()
def study_name(server):
    """A study name of this test alone (reruns and other tests on the same database never meet); dropped after."""
    name = f"pgtest_{uuid.uuid4().hex[:12]}"
    yield name
    try:
        optuna.delete_study(study_name=name, storage=server)
    except KeyError:   # never made
        pass


@pytest.fixture()
def empty_database(server):
    """The URL of a new, empty database on the server (optuna has made no tables in it yet); dropped after."""
    name = f"pgtest_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as db:
            db.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as db:
            db.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def password(url: str) -> str:
    secret = make_url(url).password
    assert secret and len(secret) >= 4, "the test URL needs a password long enough to be masked"
    return secret


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def machine(tmp_path: Path, name: str) -> Path:
    """A folder standing for one machine: the command's cwd, its runs/ and its image cache."""
    folder = tmp_path / name
    folder.mkdir()
    return folder


def sweep_argv(synth_root, folder: Path, space: str, url: str, name: str, trials: int, *extra) -> list[str]:
    return [sys.executable, "-m", "multitask", "sweep", "--config", QUICKSTART, "--space", space, "--storage", url,
            "--name", name, "--trials", str(trials), "--pruner", "none",
            *tiny_overrides(synth_root, folder, "tracking.tensorboard=false", *extra)]


def env(**more) -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), **more}


def start(argv: list[str], folder: Path, **more) -> subprocess.Popen:
    return subprocess.Popen(argv, cwd=folder, env=env(**more), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def finish(proc: subprocess.Popen, url: str) -> str:
    """Its output once it ended with 0; the URL in it shown with ***, never with the password."""
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    assert password(url) not in out, "the password was printed"
    assert shown(url) in out, out
    return out


def sweep_dir(folder: Path, name: str) -> Path:
    return folder / "runs" / name / "sweep"


# ------------------------------------------------------------------------------------------------ no server needed
def test_the_grace_period_setting(monkeypatch):
    monkeypatch.delenv(GRACE_ENV, raising=False)
    assert heartbeat_timing() == (60, 180)
    monkeypatch.setenv(GRACE_ENV, "6")
    assert heartbeat_timing() == (2, 6)
    monkeypatch.setenv(GRACE_ENV, "600")
    assert heartbeat_timing() == (60, 600)     # the beat stays at most a minute
    for bad in ("2", "ten", "-5", "1.5"):
        monkeypatch.setenv(GRACE_ENV, bad)
        with pytest.raises(UserError, match=f"{GRACE_ENV}={bad}: expected a whole number of seconds, at least 3"):
            heartbeat_timing()


# ------------------------------------------------------------------------------------------------ on the server
def test_a_wrong_password_is_one_line_without_it(server, synth_root, tmp_path, capsys):
    wrong = make_url(server).set(password="not-the-password-42").render_as_string(hide_password=False)
    space = write(tmp_path / "s.yaml", LR_SPACE)
    argv = sweep_argv(synth_root, tmp_path, space, wrong, "never_made", 1)[3:]   # without python -m multitask
    assert main(argv) == 2
    line = error_line(capsys)
    assert line.startswith(f"--storage {shown(wrong)}: cannot open the study database") and "***@" in line, line
    assert "not-the-password-42" not in line and password(server) not in line
    assert "password authentication failed" in line, line       # the server's own reason comes through
    assert not (tmp_path / "runs").exists()


def test_a_rerun_continues_the_study_on_the_server(server, study_name, synth_root, tmp_path, capsys):
    space = write(tmp_path / "s.yaml", LR_SPACE + "fixed:\n  train.max_steps: 2\n")
    tiny = tiny_overrides(synth_root, tmp_path, "tracking.tensorboard=false")

    def sweep(trials: int) -> Sweep:
        return Sweep(config=QUICKSTART, space_path=space, trials=trials, overrides=tiny, name=study_name,
                     storage=server, pruner="none", seed=3)

    out = run_sweep(sweep(2))
    assert out == sweep_dir(tmp_path, study_name) and not (out / "study.db").exists()   # the study is on the server
    run_sweep(sweep(2))     # the same command: nothing left to do
    run_sweep(sweep(3))     # a larger --trials: one more
    printed = capsys.readouterr()
    assert f"0 of 2 trials so far in {shown(server)}" in printed.out
    assert f"2 of 2 trials so far in {shown(server)}" in printed.out
    assert f"2 of 3 trials so far in {shown(server)}" in printed.out
    assert password(server) not in printed.out + printed.err
    trials = optuna.load_study(study_name=study_name, storage=server).trials
    assert [t.number for t in trials] == [0, 1, 2] and {t.state.name for t in trials} == {"COMPLETE"}
    assert len({t.params["train.lr"] for t in trials}) == 3      # the rerun drew a new point
    rows = pd.read_csv(out / "trials.csv")
    assert list(rows["number"]) == [0, 1, 2] and set(rows["state"]) == {"COMPLETE"}


def test_workers_starting_at_once_on_an_empty_database_all_open_the_study(empty_database, synth_root, tmp_path):
    """Each worker's first open of an empty database makes optuna's tables; those that lose that race (a duplicate
    type or table) try again instead of ending their sweep."""
    space = write(tmp_path / "s.yaml", LR_SPACE)
    sweep = Sweep(config=QUICKSTART, space_path=space, trials=1, overrides=tiny_overrides(synth_root, tmp_path),
                  name="first_open", storage=empty_database)
    workers = 4
    ready, errors, studies = threading.Barrier(workers), [], []

    def open_at_once(k: int) -> None:
        ready.wait()
        try:
            studies.append(open_study(sweep, worker=k))
        except Exception as err:
            errors.append(err)

    threads = [threading.Thread(target=open_at_once, args=(k,)) for k in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert len(studies) == workers and len({study._study_id for study, _ in studies}) == 1   # one study, made once
    for _, storage in studies:
        storage.engine.dispose()   # the database is dropped next


@pytest.mark.slow
def test_two_machines_fill_one_study(server, study_name, synth_root, tmp_path):
    """Two `multitask sweep` processes, each with its own cwd, runs/ and cache (two machines), fill one study: every
    trial once, each in the run dir of its number on the machine that ran it."""
    trials = 4
    space = write(tmp_path / "s.yaml", LR_SPACE + "fixed:\n  train.max_steps: 3\n")
    folders = [machine(tmp_path, "a"), machine(tmp_path, "b")]
    procs = [start(sweep_argv(synth_root, f, space, server, study_name, trials), f) for f in folders]
    try:
        for proc in procs:
            finish(proc, server)
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    study = optuna.load_study(study_name=study_name, storage=server)
    done = study.trials
    # two workers that check the count at the same moment may both start the last trial (README: up to J-1 over)
    assert trials <= len(done) <= trials + 1, [t.number for t in done]
    assert [t.number for t in done] == list(range(len(done))) and {t.state.name for t in done} == {"COMPLETE"}
    assert len({t.user_attrs["pid"] for t in done}) == 2            # both machines ran trials
    for t in done:
        run_dir = Path(t.user_attrs["run_dir"])
        assert run_dir.name == str(t.number) and run_dir.parent in {sweep_dir(f, study_name) for f in folders}
        assert (run_dir / "best.pt").is_file()
    tables = [pd.read_csv(sweep_dir(f, study_name) / "trials.csv") for f in folders]
    for rows in tables:   # each machine's table lists every trial (the one that ended first may see one running)
        assert list(rows["number"]) == list(range(len(done)))
    assert any(set(rows["state"]) == {"COMPLETE"} for rows in tables)


@pytest.mark.slow
def test_a_killed_worker_s_trial_is_run_again_after_the_heartbeat_grace(server, study_name, synth_root, tmp_path):
    """kill -9 of machine A's worker mid-trial leaves the trial RUNNING with a heartbeat that stops; machine B's
    worker, started after the grace period, fails it as stale, queues it again with the same parameters, and the
    study ends with --trials trials complete."""
    trials = 2
    space = write(tmp_path / "s.yaml", LR_SPACE)
    a, b = machine(tmp_path, "a"), machine(tmp_path, "b")
    proc = start(sweep_argv(synth_root, a, space, server, study_name, trials, "train.epochs=3"), a,
                 **{GRACE_ENV: str(GRACE)})
    try:
        deadline = time.monotonic() + 300
        while not (sweep_dir(a, study_name) / "0" / "last.pt").is_file():     # trial 0 finished its first epoch
            assert proc.poll() is None and time.monotonic() < deadline, "the worker ended before it could be killed"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    killed_at = time.monotonic()
    assert password(server) not in proc.stdout.read()
    study = optuna.load_study(study_name=study_name, storage=server)
    storage = study._storage
    (running,) = study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
    assert running.number == 0
    # Both folders are on this one host, where the next worker would see the dead pid at once (reap_local). Named as
    # another machine's trial, it is left to the heartbeat, as a worker lost with its machine would be.
    trial_id = storage.get_trial_id_from_study_id_trial_number(study._study_id, 0)
    storage.set_trial_user_attr(trial_id, "host", "machine-a")
    time.sleep(max(0.0, killed_at + GRACE + 1 - time.monotonic()))   # its last beat is now over GRACE s old
    out = finish(start(sweep_argv(synth_root, b, space, server, study_name, trials, "train.epochs=3"), b,
                       **{GRACE_ENV: str(GRACE)}), server)
    assert f"1 of {trials} trials so far" in out, out     # the dead trial still counted as running when B began
    done = optuna.load_study(study_name=study_name, storage=server).trials
    assert [t.state.name for t in done] == ["FAIL", "COMPLETE", "COMPLETE"], out
    assert done[1].user_attrs["retry_of"] == 0 and done[1].params == done[0].params      # same parameters
    # another machine's run dir is not here: the retry trains from the start in B's own folder
    assert done[1].user_attrs["run_dir"] == str(sweep_dir(b, study_name) / "1")
    assert pd.read_csv(sweep_dir(b, study_name) / "1" / "metrics.csv")["epoch"].tolist() == [1, 2, 3]
    rows = pd.read_csv(sweep_dir(b, study_name) / "trials.csv", keep_default_na=False).set_index("number")
    assert "run again as trial 1" in rows.loc[0, "reason"] and rows.loc[1, "reason"] == "retry of trial 0"
    assert (rows["state"] == "COMPLETE").sum() == trials
