"""Round 3, config / sweeps / CLI: bad input found up front in one line (exit 2), exponent floats read as numbers,
a study made for one config and space, reruns that draw new points, credentials never echoed, no empty folders."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import error_line, tiny_overrides

optuna = pytest.importorskip("optuna")

from multitask.cli import main  # noqa: E402
from multitask.config import load_config  # noqa: E402
from multitask.experiments.space import load_space  # noqa: E402
from multitask.experiments.study import Sweep, check_study, open_study, shown  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = str(ROOT / "configs" / "quickstart.yaml")
LR_SPACE = "params:\n  train.lr: {low: 1e-4, high: 1e-2, log: true}\n"
SECRET = "s3cr3t-pw"


def _files_and_dirs(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


class T:
    """What a case builds its command from: the session's tiny data, this test's folder."""

    def __init__(self, root: Path, tmp: Path):
        self.root, self.tmp = root, tmp
        self.tiny = tiny_overrides(root, tmp, "tracking.tensorboard=false")

    def space(self, text: str, name: str = "space.yaml") -> str:
        path = self.tmp / name
        path.write_text(text)
        return str(path)

    def sweep(self, space_text: str, *extra: str, name: str = "space.yaml") -> list[str]:
        return ["sweep", "--config", QUICKSTART, "--space", self.space(space_text, name), "--trials", "1", *extra,
                *self.tiny]

    def compare_same(self) -> list[str]:
        run = self.tmp / "run"
        run.mkdir()
        (run / "oof.csv").write_text("image_id\n")
        return ["compare", str(run), str(run)]


# name -> (argv builder, the fragment the one error line holds)
ONE_LINE = {
    # 10. a key for a head that does not exist
    "config show heads.newhead.weight=0.5": (
        lambda t: ["config", "show", "heads.newhead.weight=0.5"],
        "heads.newhead: unknown head 'newhead'; configured: mask, gender, age "
        "(a new head needs heads.newhead.classes)"),
    "config show heads.agee.weight=0.5": (
        lambda t: ["config", "show", "--config", QUICKSTART, "heads.agee.weight=0.5"],
        "heads.agee: unknown head 'agee' (did you mean age"),
    "sweep space key heads.newhead.weight": (
        lambda t: t.sweep("params:\n  heads.newhead.weight: {low: 0.5, high: 2.0}\n"),
        "heads.newhead.weight=0.5: "),
    # 11. train.monitor against the metrics the heads log, before anything trains
    "train.monitor typo": (
        lambda t: ["train", "--config", QUICKSTART, *t.tiny, "train.monitor=val/age/f11"],
        "train.monitor: 'val/age/f11' is not a metric this run logs (did you mean val/age/f1"),
    "train.monitor of a head that does not train": (
        lambda t: ["train", "--config", QUICKSTART, *t.tiny, "--heads", "age", "train.monitor=val/mask/f1"],
        "train.monitor: 'val/mask/f1' is not a metric this run logs"),
    "sweep choice of a never-logged monitor": (
        lambda t: t.sweep("params:\n  train.monitor: {choices: [val/composite/f1, val/age/f1_old]}\n"),
        "train.monitor=val/age/f1_old: train.monitor: 'val/age/f1_old' is not a metric this run logs"),
    # 14. an in-memory SQLite study keeps nothing
    "--storage sqlite://": (lambda t: t.sweep(LR_SPACE, "--storage", "sqlite://"),
                            "--storage sqlite://: an in-memory SQLite database keeps no study"),
    "--storage sqlite:///:memory:": (lambda t: t.sweep(LR_SPACE, "--storage", "sqlite:///:memory:"),
                                     "--storage sqlite:///:memory:: an in-memory SQLite database"),
    # 15. a refused storage: the password masked (the after-check: not echoed, no sweep folder left)
    "--storage with a password, refused": (
        lambda t: t.sweep(LR_SPACE, "--storage", f"postgresql://user:{SECRET}@127.0.0.1:9/db"),
        "--storage postgresql://user:***@127.0.0.1:9/db: cannot open the study database"),
    "--storage not parseable, with a password": (
        lambda t: t.sweep(LR_SPACE, "--storage", f"nosuchdb://user:{SECRET}@host/db"),
        "--storage nosuchdb://user:***@host/db: cannot open the study database"),
    # 17. an exponent float without a dot is a number (here one out of range: it was read as a number)
    "train.lr=-5e-4": (lambda t: ["config", "show", "train.lr=-5e-4"],
                       "train.lr: -0.0005 is out of range; expected > 0"),
    "sweep fixed train.lr: -1E-3": (
        lambda t: t.sweep(LR_SPACE + "fixed:\n  train.weight_decay: -1E-3\n"),
        "train.weight_decay: -0.001 is out of range; expected >= 0"),
    # 22. the same table twice without --names
    "compare RUN RUN": (lambda t: t.compare_same(), "is given twice; a table compared with itself differs by 0"),
}


@pytest.mark.parametrize("case", list(ONE_LINE))
def test_one_line_refusal(case, synth_root, tmp_path, capsys):
    build, fragment = ONE_LINE[case]
    argv = build(T(synth_root, tmp_path))
    code = main(argv)
    message = error_line(capsys)
    assert code == 2 and fragment in message, message
    assert SECRET not in message
    if argv[0] in ("train", "sweep"):   # refused before anything was made: no run dir, no runs/<name>/sweep/
        assert _files_and_dirs(tmp_path / "runs") == [] and _files_and_dirs(tmp_path / "cache") == []


# ------------------------------------------------------------------------------------------------ 17. floats
def test_exponent_floats_are_numbers_in_config_files_overrides_and_spaces(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("train:\n  lr: 1E-3\n  min_lr: 5e-6\n  weight_decay: 1e-4\n")
    cfg = load_config(config, ["train.momentum=9e-1", "heads.age.class_weights=[1e0, 2E0, 3e0]"])
    assert (cfg.train.lr, cfg.train.min_lr, cfg.train.weight_decay, cfg.train.momentum) == (1e-3, 5e-6, 1e-4, 0.9)
    assert cfg.heads["age"].class_weights == [1.0, 2.0, 3.0]
    space = load_space(_write(tmp_path / "s.yaml", "params:\n  train.lr: {low: 1e-4, high: 1E-2, log: true}\n"
                              "  train.weight_decay: {choices: [0, 1e-4, 5e-4]}\nfixed:\n  train.min_lr: 1e-6\n"
                              "first:\n  - {train.lr: 2e-3, train.weight_decay: 1e-4}\n"))
    assert (space.params[0].low, space.params[0].high) == (1e-4, 1e-2)
    assert list(space.params[1].choices.values()) == [0, 1e-4, 5e-4]
    assert space.first == [{"train.lr": 2e-3, "train.weight_decay": "0.0001"}]
    assert load_config(None, space.overrides({"train.weight_decay": 5e-4})).train.min_lr == 1e-6
    assert yaml.safe_load("x: 1e-3")["x"] == "1e-3"   # PyYAML itself still reads YAML 1.1: the loader is ours


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


# ------------------------------------------------------------------------------------------------ 12. one study
def test_a_study_refuses_another_space_or_config_up_front(synth_root, tmp_path, capsys):
    t = T(synth_root, tmp_path)
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


# ------------------------------------------------------------------------------------------------ 13. --seed rerun
# the test asks for trials by hand (study.ask), outside Study.optimize, which is what Optuna's heartbeat warns about
@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_a_rerun_with_the_same_seed_draws_new_points(synth_root, tmp_path):
    t = T(synth_root, tmp_path)
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


# ------------------------------------------------------------------------------------------------ 15. masking
def test_storage_urls_are_shown_without_their_password():
    assert shown("postgresql://user:pw@db.example/sweeps") == "postgresql://user:***@db.example/sweeps"
    assert shown("postgresql+psycopg2://u:p%40ss:x@h:5432/db?sslmode=require") == \
        "postgresql+psycopg2://u:***@h:5432/db?sslmode=require"
    assert shown("postgresql://user@db/sweeps") == "postgresql://user@db/sweeps"
    assert shown("sqlite:////tmp/x/study.db") == "sqlite:////tmp/x/study.db"


# ------------------------------------------------------------------------------------------------ 16. ulimit -f
@pytest.mark.slow
def test_file_size_limit_on_the_study_database_is_one_line(synth_root, tmp_path):
    """The study exists and is larger than the file-size limit (ulimit -f) set next: its next write fails (optuna's
    StorageInternalError), and the sweep ends with one line naming the database and the limit, exit 2."""
    t = T(synth_root, tmp_path)
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
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script, json.dumps(argv)], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path, env=env)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    study_db = tmp_path / "runs" / "quickstart" / "sweep" / "study.db"
    assert lines[0].startswith(f"error: the study database sqlite:///{study_db} could not be written: File too "
                               f"large (the file-size limit, ulimit -f, is 30000 bytes); the trials it holds are "
                               f"kept"), lines[0]


# ------------------------------------------------------------------------------------------------ 21. train
def test_a_failed_train_leaves_no_empty_runs_folder(synth_root, tmp_path, capsys):
    """The run dir is made, then the data is missing: the run dir goes, and so do runs/<name>/ and runs/ this run
    made; folders that were there before stay."""
    missing = ["train", "--config", QUICKSTART, *T(synth_root, tmp_path).tiny, f"data.root={tmp_path / 'nodata'}"]
    assert main(missing) == 2
    assert "nodata" in error_line(capsys)
    assert not (tmp_path / "runs").exists()
    (tmp_path / "runs" / "other").mkdir(parents=True)
    assert main(missing) == 2
    error_line(capsys)
    assert _files_and_dirs(tmp_path / "runs") == ["other"]
    (tmp_path / "runs" / "quickstart").mkdir()   # there before (empty): not this run's to remove
    assert main(missing) == 2
    error_line(capsys)
    assert _files_and_dirs(tmp_path / "runs") == ["other", "quickstart"]

