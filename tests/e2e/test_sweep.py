"""Sweeps: the space file, a tiny study end to end, resume after a kill, two workers on one study, wandb sweeps."""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

optuna = pytest.importorskip("optuna")

from helpers import LR_SPACE, QUICKSTART, REPO, Commands, error_line, tiny_overrides  # noqa: E402

from multitask.cli import main  # noqa: E402
from multitask.config import load_config  # noqa: E402
from multitask.config.show import flow_yaml  # noqa: E402
from multitask.experiments.space import check_space, load_space  # noqa: E402
from multitask.experiments.study import Sweep, check_study, open_study, shown  # noqa: E402
from multitask.experiments.summary import plot_importances  # noqa: E402
from multitask.experiments.workers import run_sweep  # noqa: E402
from multitask.utils.errors import UserError  # noqa: E402

ROOT = REPO


@pytest.fixture()
def tiny(synth_root, tmp_path):
    """The overrides of conftest's tiny_cfg (32x32 images, 1 epoch, CPU), for commands that rebuild configs."""
    return tiny_overrides(synth_root, tmp_path, "tracking.tensorboard=false")


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


SPACE = """
params:
  train.lr: {low: 1.0e-4, high: 1e-2, log: true}
  train.scheduler: {choices: [cosine, step]}
  train.step_size: {low: 1, high: 3, when: {train.scheduler: step}}
  heads.age.loss:
    choices: {ce: {ce: 1.0}, focal_f1: {focal: 0.5, f1: 0.5}}
  heads.age.focal_gamma: {low: 0.5, high: 3.0, when: {heads.age.loss: focal_f1}}
  heads.age.bins: {choices: [[30, 57], [30, 60]]}
"""


# ------------------------------------------------------------------------------------------------ the space file
def test_space_file_kinds_conditions_and_values_read_back(tmp_path):
    space = load_space(write(tmp_path / "s.yaml", SPACE))
    kinds = {p.key: p.kind for p in space.params}
    assert kinds == {"train.lr": "float", "train.scheduler": "categorical", "train.step_size": "int",
                     "heads.age.loss": "categorical", "heads.age.focal_gamma": "float",
                     "heads.age.bins": "categorical"}
    assert space.params[0].log and space.params[0].high == 0.01     # 1e-2 (a string to PyYAML) read as a number
    assert list(space.params[-1].choices) == ["[30, 57]", "[30, 60]"]
    # conditional keys: sampled only when their parent's choice matches
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = []
    for _ in range(30):
        trial = study.ask()
        values = space.sample(trial)
        assert ("train.step_size" in values) == (values["train.scheduler"] == "step")
        assert ("heads.age.focal_gamma" in values) == (values["heads.age.loss"] == {"focal": 0.5, "f1": 0.5})
        cfg = load_config(QUICKSTART, space.overrides(values))
        assert cfg.heads["age"].bins in ([30, 57], [30, 60]) and cfg.train.lr == pytest.approx(values["train.lr"])
        seen.append(values["train.scheduler"])
        study.tell(trial, 0.0)
    assert set(seen) == {"cosine", "step"}
    for value in (1e-5, 0.5, "on", [30, 58], {"focal": 0.5}, "two\nlines"):   # one line each, read back the same
        assert yaml.safe_load(flow_yaml(value)) == value and "\n" not in flow_yaml(value)


def test_first_points_read_as_optuna_stores_them_and_bad_ones_are_one_line(tmp_path):
    first = ("first:\n  - {train.scheduler: step, train.step_size: 2, heads.age.bins: [30, 57]}\n"
             "  - {heads.age.loss: focal_f1, train.lr: 0.001}\n")
    space = load_space(write(tmp_path / "s.yaml", SPACE + first))
    assert space.first == [{"train.scheduler": "step", "train.step_size": 2, "heads.age.bins": "[30, 57]"},
                           {"heads.age.loss": "focal_f1", "train.lr": 0.001}]
    for point, message in [("{train.lrr: 0.001}", r"first\[0\]: train.lrr: not a key of params"),
                           ("{heads.age.bins: [30, 58]}", r"\[30, 58\] is not one of its choices"),
                           ("{train.lr: 0.5}", r"0.5 is outside its range \[0.0001, 0.01\]"),
                           ("[train.lr]", "first: expected a list of mappings")]:
        with pytest.raises(UserError, match=message) as err:
            load_space(write(tmp_path / "s.yaml", SPACE + f"first:\n  - {point}\n"))
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("text, message", [
    ("params:\n  train.lrr: {low: 0.001, high: 0.01}\n",
     r"train.lrr=0.001: .*unknown key 'train.lrr' \(did you mean lr\?\)"),
    ("params:\n  train.scheduler: {choices: [cosine, cosinee]}\n", "train.scheduler=cosinee: .*invalid choice"),
    ("params:\n  heads.age.loss.fokal: {low: 0.1, high: 1.0}\n", "heads.age.loss.fokal=0.1: .*fokal"),
    ("params:\n  train.lr: {low: 0.01, high: 0.001}\n", "train.lr: low .* must be below high"),
    ("params:\n  train.lr: {low: 0.0, high: 0.1, log: true}\n", "log scale needs low > 0"),
    ("params:\n  train.step_size: {low: 1, high: 3, when: {train.scheduler: step}}\n",
     "when: 'train.scheduler' must be a categorical key listed above"),
    ("params:\n  train.epochs: {low: 0, high: 3}\n", "train.epochs=0: .*too small"),
])
def test_a_bad_space_stops_before_any_trial_with_one_line_naming_the_key(tmp_path, text, message):
    import re

    with pytest.raises(UserError) as err:
        space = load_space(write(tmp_path / "s.yaml", text))
        check_space(space, lambda overrides: _preflight(load_config(QUICKSTART, overrides)))
    line = str(err.value)
    assert "\n" not in line and re.search(message, line), line


def _preflight(cfg):
    from multitask.train.run import preflight
    preflight(cfg)
    return cfg


def test_importances_plot_only_when_the_objective_varied(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for values, drawn in [([0.1, 0.5, 0.2, 0.9, 0.4], True), ([0.0] * 5, False)]:
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
        study.optimize(lambda t, v=iter(values): (t.suggest_float("lr", 1e-4, 1e-2, log=True),
                                                  t.suggest_categorical("loss", ["ce", "focal"]), next(v))[-1],
                       n_trials=len(values))
        path = plot_importances(study, tmp_path / "importances.png")
        assert (path is not None) == drawn and (path is None or path.stat().st_size > 1000)


# ------------------------------------------------------------------------------------------------ a tiny sweep
@pytest.mark.slow
def test_sweep_of_four_trials_writes_its_outputs_and_best_yaml_trains(tiny, tmp_path, capsys):
    first = "first:\n  - {train.scheduler: step, train.step_size: 2, heads.age.bins: [30, 57]}\n"
    space = write(tmp_path / "s.yaml", SPACE + "fixed:\n  train.max_steps: 3\n" + first)
    sweep = Sweep(config=QUICKSTART, space_path=space, trials=4, overrides=tiny, seed=1)
    out = run_sweep(sweep)
    assert out == tmp_path / "runs" / "quickstart" / "sweep" and (out / "study.db").is_file()
    rows = pd.read_csv(out / "trials.csv")
    assert len(rows) == 4 and set(rows["state"]) == {"COMPLETE"}
    assert {"number", "value", "state", "duration_s", "train.lr", "heads.age.bins", "run_dir"} <= set(rows)
    assert rows["value"].between(0, 1).all()
    # the first point ran first, its unset key (train.lr) sampled
    assert (rows.loc[0, "train.scheduler"], rows.loc[0, "train.step_size"], rows.loc[0, "heads.age.bins"]) == \
        ("step", 2, "[30, 57]") and 1e-4 <= rows.loc[0, "train.lr"] <= 1e-2
    for n in range(4):   # each trial an ordinary run dir, named by its number
        run = out / str(n)
        assert {"config.yaml", "metrics.csv", "best.pt", "last.pt", "oof.csv"} <= {p.name for p in run.iterdir()}
        saved = yaml.safe_load((run / "config.yaml").read_text())
        assert saved["train"]["lr"] == pytest.approx(rows.loc[n, "train.lr"])
        assert saved["tracking"]["wandb"]["group"] == "quickstart"           # wandb groups a sweep's trials
        assert pd.read_csv(run / "metrics.csv")["val/composite/f1"].iloc[-1] == pytest.approx(rows.loc[n, "value"])
    for png in ("history.png", "curves.png"):
        assert (out / png).stat().st_size > 1000, png
    # three steps on tiny data may score every trial alike: then there is nothing to attribute
    assert (out / "importances.png").is_file() == (rows["value"].nunique() > 1)
    best = rows.loc[rows["value"].idxmax()]
    best_cfg = load_config(out / "best.yaml")
    assert best_cfg.name == "quickstart_best" and best_cfg.train.lr == pytest.approx(best["train.lr"])
    printed = capsys.readouterr().out
    assert "best 4 of 4 trials" in printed and "best.yaml" in printed
    assert main(["train", "--config", str(out / "best.yaml")]) == 0
    assert (tmp_path / "runs" / "quickstart_best" / "1" / "best.pt").is_file()
    # the same command again: the study is complete, nothing new runs; a larger --trials adds trials
    run_sweep(Sweep(config=QUICKSTART, space_path=space, trials=4, overrides=tiny))
    assert len(pd.read_csv(out / "trials.csv")) == 4
    run_sweep(Sweep(config=QUICKSTART, space_path=space, trials=5, overrides=tiny))
    assert len(pd.read_csv(out / "trials.csv")) == 5


def test_a_trial_is_trained_as_any_training_with_its_decisions(tiny, tmp_path):
    """A trial runs through run_training: train.decisions auto fits decisions.json in its run dir."""
    space = write(tmp_path / "s.yaml", "params:\n  train.lr: {low: 1.0e-4, high: 1.0e-2, log: true}\n"
                  "fixed:\n  train.max_steps: 1\n")
    out = run_sweep(Sweep(config=QUICKSTART, space_path=space, trials=1, overrides=tiny, pruner="none", seed=0))
    assert pd.read_csv(out / "trials.csv")["state"].tolist() == ["COMPLETE"]
    doc = json.loads((out / "0" / "decisions.json").read_text())
    assert set(doc["offsets"]) == {"mask", "gender", "age"} and doc["source"]["table"] == "oof.csv"


@pytest.mark.slow
def test_a_trial_with_bad_values_fails_with_its_reason_and_the_sweep_goes_on(tiny, tmp_path):
    # each value alone is valid (so the space passes its check); skip without the cache is not
    space = write(tmp_path / "s.yaml", "params:\n  data.on_bad_image: {choices: [error, skip]}\n"
                  "  data.cache: {choices: [true, false]}\nfixed:\n  train.max_steps: 2\n")
    sweep = Sweep(config=QUICKSTART, space_path=space, trials=6, overrides=tiny, name="bad", pruner="none",
                  seed=0)
    run_sweep(sweep)
    rows = pd.read_csv(sweep.dir / "trials.csv", keep_default_na=False)
    assert len(rows) == 6
    bad = (rows["data.on_bad_image"] == "skip") & (rows["data.cache"].astype(str) == "False")
    assert bad.any() and (~bad).any()
    assert (rows.loc[bad, "state"] == "FAIL").all() and (rows.loc[~bad, "state"] == "COMPLETE").all()
    assert rows.loc[bad, "reason"].str.contains("data.on_bad_image=skip needs data.cache=true").all()


def test_pruner_stops_a_trial_from_its_epoch_reports(tiny, tmp_path):
    """The callback reports every validation; a pruner that always prunes ends each trial after its first epoch."""
    from multitask.experiments.trial import OptunaPruning
    from multitask.train.run import fit

    study = optuna.create_study(direction="maximize", pruner=AlwaysPrune())
    trial = study.ask()
    cfg = load_config(QUICKSTART, tiny + ["train.epochs=3", "train.max_steps=6"])
    with pytest.raises(optuna.TrialPruned, match="pruned after epoch 1"):
        fit(cfg, tmp_path / "t0", callbacks=[OptunaPruning(trial, "val/composite/f1")])
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    frozen = study.trials[0]
    assert list(frozen.intermediate_values) == [1] and frozen.state.name == "PRUNED"
    assert pd.read_csv(tmp_path / "t0" / "metrics.csv")["epoch"].tolist() == [1]


class AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study, trial):
        return True


# ------------------------------------------------------------------------------------------------ kill, workers
def _cli(tiny, space, *extra):
    return [sys.executable, "-m", "multitask", "sweep", "--config", QUICKSTART, "--space", space, *extra, *tiny]


def _env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


@pytest.mark.slow
def test_a_killed_sweep_continues_and_resumes_the_killed_trial(tiny, tmp_path):
    space = write(tmp_path / "s.yaml", "params:\n  train.lr: {low: 1.0e-3, high: 1.0e-2, log: true}\n")
    args = tiny + ["train.epochs=3"]
    sweep_dir = tmp_path / "runs" / "quickstart" / "sweep"
    proc = subprocess.Popen(_cli(args, space, "--trials", "1", "--pruner", "none"), env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not (sweep_dir / "0" / "last.pt").is_file():     # trial 0 finished its first epoch
            assert proc.poll() is None and time.monotonic() < deadline, "the sweep ended before it could be killed"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    with sqlite3.connect(sweep_dir / "study.db") as db:
        assert db.execute("select state from trials where number = 0").fetchone()[0] == "RUNNING"
    sweep = Sweep(config=QUICKSTART, space_path=space, trials=1, overrides=args, pruner="none")
    run_sweep(sweep)
    rows = pd.read_csv(sweep.dir / "trials.csv", keep_default_na=False).set_index("number")
    assert rows.loc[0, "state"] == "FAIL" and "run again as trial 1" in rows.loc[0, "reason"]
    assert rows.loc[1, "state"] == "COMPLETE" and rows.loc[1, "reason"] == "retry of trial 0"
    assert rows.loc[1, "train.lr"] == pytest.approx(rows.loc[0, "train.lr"])       # same parameters
    assert rows.loc[1, "run_dir"] == str(sweep_dir / "0")                            # resumed where it stopped
    assert pd.read_csv(sweep_dir / "0" / "metrics.csv")["epoch"].tolist() == [1, 2, 3]
    assert list(rows["state"]) == ["FAIL", "COMPLETE"]


@pytest.mark.slow
def test_a_requeued_trial_resumes_only_under_the_resume_rules(tiny, tmp_path, capsys):
    """A queued retry whose config now differs in a key that may not change on resume (here the batch size, from
    the command line) never trains on with the new value: the command is refused before any trial (the study was
    made with the other config); with the study's own config the retry resumes."""
    import socket

    from multitask.experiments.study import open_study

    space = write(tmp_path / "s.yaml", "params:\n  train.lr: {low: 1.0e-3, high: 1.0e-2, log: true}\n"
                  "fixed:\n  train.max_steps: 2\n")
    sweep = Sweep(config=QUICKSTART, space_path=space, trials=1, overrides=tiny, pruner="none")
    run_sweep(sweep)
    study, _ = open_study(sweep)
    first = study.trials[0]
    study.enqueue_trial(first.params, user_attrs={"retry_of": 0, "retries": 1,
                                                  "resume_dir": first.user_attrs["run_dir"],
                                                  "resume_host": socket.gethostname()})
    with pytest.raises(UserError, match="was made with another base config or space .config train.batch_size: 16 "
                                         "then, 8 now"):
        run_sweep(Sweep(config=QUICKSTART, space_path=space, trials=2, overrides=tiny + ["train.batch_size=8"],
                        pruner="none"))
    assert [t.state.name for t in study.trials] == ["COMPLETE", "WAITING"]   # the retry waits, untouched
    run_sweep(Sweep(config=QUICKSTART, space_path=space, trials=2, overrides=tiny + ["train.epochs=1"],
                    pruner="none"))
    rows = pd.read_csv(sweep.dir / "trials.csv", keep_default_na=False).set_index("number")
    assert list(rows["state"]) == ["COMPLETE", "COMPLETE"] and rows.loc[1, "reason"] == "retry of trial 0"
    assert rows.loc[1, "run_dir"] == str(sweep.dir / "0")


@pytest.mark.slow
def test_an_interrupted_trial_is_run_again_with_its_parameters(tiny, tmp_path, monkeypatch):
    """Ctrl-C mid-trial: the trial is failed and marked; the next run of the command queues it again first."""
    import multitask.experiments.trial as trial_module

    space = write(tmp_path / "s.yaml", "params:\n  train.lr: {low: 1.0e-3, high: 1.0e-2, log: true}\n"
                  "fixed:\n  train.max_steps: 2\n")
    real = trial_module.run_trial

    def interrupted(sweep, trial, *, quiet):
        trial.suggest_float("train.lr", 1e-3, 1e-2, log=True)
        raise KeyboardInterrupt

    monkeypatch.setattr(trial_module, "run_trial", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(Sweep(config=QUICKSTART, space_path=space, trials=1, overrides=tiny, pruner="none"))
    monkeypatch.setattr(trial_module, "run_trial", real)
    sweep = Sweep(config=QUICKSTART, space_path=space, trials=1, overrides=tiny, pruner="none")
    run_sweep(sweep)
    rows = pd.read_csv(sweep.dir / "trials.csv", keep_default_na=False).set_index("number")
    assert list(rows["state"]) == ["FAIL", "COMPLETE"]
    assert rows.loc[0, "reason"] == "interrupted; run again as trial 1"
    assert rows.loc[1, "train.lr"] == pytest.approx(rows.loc[0, "train.lr"])


def test_a_worker_process_starts_from_the_package_entry_without_warnings():
    """The command spawn_worker runs loads the workers module once (no runpy warning about a module imported before
    it runs) and reports a bad argument as one line."""
    done = subprocess.run([sys.executable, "-W", "error", "-m", "multitask.experiments", "{}", "1"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stderr.startswith("error: sweep worker 1: "), done.stderr[-2000:]
    assert "Warning" not in done.stderr


@pytest.mark.slow
def test_two_workers_fill_one_study(tiny, tmp_path):
    """A --jobs worker process (the command run_sweep spawns) and this process run trials of one SQLite study at
    the same time; the study ends with --trials trials, each in the run dir of its number."""
    from multitask.experiments.study import open_study
    from multitask.experiments.workers import spawn_worker

    space = write(tmp_path / "s.yaml", "params:\n  train.lr: {low: 1.0e-3, high: 1.0e-2, log: true}\n"
                  "fixed:\n  train.max_steps: 3\n")
    sweep = Sweep(config=QUICKSTART, space_path=space, trials=4, overrides=tiny, jobs=2, pruner="none")
    study, _ = open_study(sweep)
    child = spawn_worker(sweep, 1)
    try:
        deadline = time.monotonic() + 240
        while not any(t.user_attrs.get("pid") == child.pid for t in study.get_trials()):   # it is training
            assert child.poll() is None and time.monotonic() < deadline, "the worker did not start a trial"
            time.sleep(0.1)
        run_sweep(Sweep(config=QUICKSTART, space_path=space, trials=4, overrides=tiny, pruner="none"))
        assert child.wait(timeout=240) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    trials = optuna.load_study(study_name="quickstart", storage=sweep.storage).trials
    assert 4 <= len(trials) <= 5 and all(t.state.name == "COMPLETE" for t in trials)
    assert {t.user_attrs["pid"] for t in trials} == {child.pid, os.getpid()}          # both workers ran trials
    assert [Path(t.user_attrs["run_dir"]).name for t in trials] == [str(t.number) for t in trials]


@pytest.mark.slow
def test_the_parent_opens_the_study_once_and_prepares_the_data_its_trials_use(tiny, tmp_path, monkeypatch):
    """--jobs 2 with the child worker stubbed out: the parent's one study serves its own trials and the summary, and
    the data it prepares for the workers has the space's fixed values (a fixed image size warms the right cache)."""
    import torch

    import multitask.experiments.workers as workers_module

    class Finished:   # a worker process that has already ended
        def wait(self, timeout=None):
            return 0

        def poll(self):
            return 0

    opened, prepared = [], []
    real_open, real_prepare = workers_module.open_study, workers_module.prepare_data
    monkeypatch.setattr(workers_module, "open_study", lambda *a, **k: opened.append(1) or real_open(*a, **k))
    monkeypatch.setattr(workers_module, "prepare_data", lambda cfg, **k: prepared.append(cfg) or real_prepare(cfg, **k))
    monkeypatch.setattr(workers_module, "spawn_worker", lambda sweep, k: Finished())
    space = write(tmp_path / "s.yaml", "params:\n  train.lr: {low: 1.0e-3, high: 1.0e-2, log: true}\n"
                  "fixed:\n  train.max_steps: 2\n  data.image_size: [32, 32]\n")
    threads = torch.get_num_threads()
    try:
        out = run_sweep(Sweep(config=QUICKSTART, space_path=space, trials=2,
                              overrides=tiny + ["data.image_size=[40,40]"], pruner="none", jobs=2))
    finally:
        torch.set_num_threads(threads)
    assert len(opened) == 1
    assert prepared and all(list(cfg.data.image_size) == [32, 32] for cfg in prepared)
    rows = pd.read_csv(out / "trials.csv")
    assert list(rows["state"]) == ["COMPLETE", "COMPLETE"]


# ------------------------------------------------------------------------------------------------ wandb sweeps
def test_wandb_sweep_arguments_parse_into_valid_configs():
    """`wandb agent` runs the command with ${args_no_hyphens} = ["key=value", ...] (str() of each sampled value)."""
    spec = yaml.safe_load((ROOT / "configs" / "sweeps" / "wandb_optimizer.yaml").read_text())
    command = spec["command"]
    assert command[:3] == ["${env}", "multitask", "train"] and command[-1] == "${args_no_hyphens}"
    fixed = command[3:-1]
    config = fixed[fixed.index("--config") + 1]
    overrides = [a for a in fixed if "=" in a and not a.startswith("--")]
    for key, p in spec["parameters"].items():
        for value in p.get("values") or [p["min"], p["max"]]:
            cfg = load_config(ROOT / config, overrides + [f"{key}={value}"])
            section, name = key.split(".")
            assert getattr(getattr(cfg, section), name) == pytest.approx(value) if isinstance(value, float) else \
                getattr(getattr(cfg, section), name) == value
    assert spec["metric"]["name"] == "val/composite/f1"
    # the shipped Optuna spaces pass their own check
    for space in ("age_head.yaml", "optimizer.yaml", "realfaces_recipe.yaml"):
        check_space(load_space(ROOT / "configs" / "sweeps" / space), lambda o: _preflight(load_config(QUICKSTART, o)))


def test_a_study_refuses_another_space_or_config_up_front(synth_root, tmp_path, capsys):
    t = Commands(synth_root, tmp_path)
    sweep = Sweep(config=QUICKSTART, space_path=t.space(LR_SPACE), trials=1, overrides=t.tiny)
    study, _ = open_study(sweep)
    check_study(study, sweep, sweep.build([]))          # a new study: stamped
    check_study(study, sweep, sweep.build([]))          # the same config and space: fine
    elsewhere = Sweep(config=QUICKSTART, space_path=sweep.space_path, trials=1, storage=sweep.storage,
                      overrides=[*t.tiny, "data.num_workers=1", f"data.cache_dir={tmp_path / 'other'}"])
    check_study(study, elsewhere, elsewhere.build([]))   # where the data and cache live is not what trains
    other_space = "params:\n  train.lr: {low: 1e-4, high: 1e-1, log: true}\n"
    for argv, fragment in [(t.sweep(other_space, name="other.yaml"), "space param train.lr: "),
                           ([*t.sweep(LR_SPACE), "train.batch_size=8"], "config train.batch_size: 16 then, 8 now")]:
        assert main(argv) == 2
        message = error_line(capsys)
        assert message.startswith(f"--name quickstart: the study in {sweep.storage} was made with another base "
                                  f"config or space (") and fragment in message, message
    assert study.trials == []   # refused before any trial


# the test asks for trials by hand (study.ask), outside Study.optimize, which is what Optuna's heartbeat warns about
@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_a_rerun_with_the_same_seed_draws_new_points(synth_root, tmp_path):
    t = Commands(synth_root, tmp_path)
    space = t.space("params:\n  train.lr: {low: 1e-4, high: 1e-2, log: true}\n"
                    "  train.scheduler: {choices: [cosine, step, plateau]}\n")
    drawn = []
    for run in range(3):   # the same command three times, one trial each
        sweep = Sweep(config=QUICKSTART, space_path=space, trials=run + 1, overrides=t.tiny, seed=7)
        study, _ = open_study(sweep)
        trial = study.ask()
        drawn.append(sweep.space.sample(trial)["train.lr"])
        study.tell(trial, 0.5)
    assert len(set(drawn)) == 3, drawn
    again = Sweep(config=QUICKSTART, space_path=space, trials=1, overrides=t.tiny, seed=7, name="fresh")
    study, _ = open_study(again)
    assert again.space.sample(study.ask())["train.lr"] == drawn[0]   # still reproducible from the seed


def test_storage_urls_are_shown_without_their_password():
    assert shown("postgresql://user:pw@db.example/sweeps") == "postgresql://user:***@db.example/sweeps"
    assert shown("postgresql+psycopg2://u:p%40ss:x@h:5432/db?sslmode=require") == \
        "postgresql+psycopg2://u:***@h:5432/db?sslmode=require"
    assert shown("postgresql://user@db/sweeps") == "postgresql://user@db/sweeps"
    assert shown("sqlite:////tmp/x/study.db") == "sqlite:////tmp/x/study.db"


@pytest.mark.slow
def test_file_size_limit_on_the_study_database_is_one_line(synth_root, tmp_path):
    """The study exists and is larger than the file-size limit (ulimit -f) set next: its next write fails (optuna's
    StorageInternalError), and the sweep ends with one line naming the database and the limit, exit 2."""
    t = Commands(synth_root, tmp_path)
    argv = t.sweep(LR_SPACE, "--pruner", "none")
    script = ("import json, os, resource, sys\n"
              "from multitask.cli import main\n"
              "from multitask.experiments.study import Sweep, open_study\n"
              "argv = json.loads(sys.argv[1])\n"
              "sweep = Sweep(config=argv[2], space_path=argv[4], trials=1, overrides=argv[9:])\n"
              "open_study(sweep)\n"
              "assert os.path.getsize(sweep.dir / 'study.db') > 30000\n"
              "resource.setrlimit(resource.RLIMIT_FSIZE, (30000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))\n"
              "sys.exit(main(argv))\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script, json.dumps(argv)], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path, env=env)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    study_db = tmp_path / "runs" / "quickstart" / "sweep" / "study.db"
    assert lines[0].startswith(f"error: the study database sqlite:///{study_db} could not be written: File too "
                               f"large (the file-size limit, ulimit -f, is 30000 bytes); the trials it holds are "
                               f"kept"), lines[0]
