"""wandb as its users expect: its environment when the config is silent, best-epoch summaries on an epoch axis,
artifacts, k-fold groups; TensorBoard hparams. A stand-in wandb module records what the Tracker asks of it."""
import io
import sys
import types
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from multitask.config import load_config
from multitask.runs.checkpoint import load_checkpoint
from multitask.tracking.tracker import Tracker
from multitask.tracking.wandb_sink import wandb_target
from multitask.train.callbacks import Callback
from multitask.train.run import fit


class FakeRun:
    id = "fake-run"

    def __init__(self):
        self.metrics, self.logged, self.artifacts, self.finished = {}, [], [], None

    def define_metric(self, name, **kwargs):
        self.metrics[name] = kwargs

    def log(self, values, step=None):
        self.logged.append((step, values))

    def log_artifact(self, artifact, aliases=None):
        self.artifacts.append((artifact, aliases))

    def finish(self, exit_code=0):
        self.finished = exit_code


class FakeArtifact:
    def __init__(self, name, type, metadata=None):
        self.name, self.type, self.metadata, self.files = name, type, metadata, []

    def add_file(self, path, policy="mutable"):
        self.files.append((path, policy))


def fake_wandb(logged_in=False):
    module = types.SimpleNamespace(inits=[], logins=[], run=FakeRun(), Artifact=FakeArtifact, Settings=lambda **kw: kw,
                                   Image=lambda data: ("image", data),
                                   Table=lambda columns, data: ("table", columns, data))
    module.init = lambda mode=None, **kwargs: module.inits.append({"mode": mode, **kwargs}) or module.run
    module.login = lambda prompt=True, verify=True: module.logins.append((prompt, verify)) or logged_in
    return module


def tracker(run_dir, *overrides, module=None):
    """A Tracker whose `import wandb` finds `module` (the stand-in keeps what it was asked)."""
    cfg = load_config(None, ["name=trk", "tracking.tensorboard=false", *overrides])
    with pytest.MonkeyPatch.context() as patch:
        if module is not None:
            patch.setitem(sys.modules, "wandb", module)
        return Tracker(run_dir=run_dir, cfg=cfg, console=Console(file=io.StringIO()))


@pytest.mark.parametrize("config, env, key, expected", [
    ({}, {}, False, ("offline", "multitask", None)),                               # nothing known: offline
    ({}, {}, True, ("online", "multitask", None)),                                 # logged in: online
    ({}, {"WANDB_MODE": "disabled", "WANDB_PROJECT": "p", "WANDB_ENTITY": "team"}, True, ("disabled", "p", "team")),
    ({}, {"WANDB_MODE": "dryrun"}, True, ("offline", "multitask", None)),          # wandb's old name for offline
    ({"mode": "offline", "project": "mine"}, {"WANDB_MODE": "online", "WANDB_PROJECT": "p"}, True,
     ("offline", "mine", None)),                                                   # the config wins
])
def test_mode_project_entity_follow_wandbs_environment_unless_configured(config, env, key, expected):
    w = load_config(None, [f"tracking.wandb.{k}={v}" for k, v in config.items()]).tracking.wandb
    assert wandb_target(w, env, lambda: key) == expected


def test_an_unset_mode_goes_online_with_a_key_and_uses_the_env_project(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    monkeypatch.setenv("WANDB_PROJECT", "from-env")
    module = fake_wandb()
    tracker(tmp_path, module=module).close()
    assert module.inits[0]["mode"] == "online" and module.inits[0]["project"] == "from-env"
    monkeypatch.delenv("WANDB_API_KEY")
    module = fake_wandb(logged_in=False)
    tracker(tmp_path / "b", module=module).close()
    assert module.inits[0]["mode"] == "offline"


def test_wandb_mode_is_resolved_once_and_a_disabled_wandb_is_never_opened(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")   # the config's mode is unset: wandb's environment decides
    module = fake_wandb(logged_in=True)
    t = tracker(tmp_path / "a", module=module)
    t.close()
    assert module.inits == [] and module.logins == [] and t.sinks == [] and t.wandb_id is None
    monkeypatch.setitem(sys.modules, "wandb", None)   # not installed: disabled is not worth a warning
    t = tracker(tmp_path / "b")
    t.close()
    assert t.console.file.getvalue() == ""
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    module = fake_wandb(logged_in=True)   # nothing set: online because `wandb login` knows a key, asked once
    tracker(tmp_path / "c", module=module).close()
    assert module.inits[0]["mode"] == "online" and module.logins == [(False, False)]


def test_epoch_axis_and_best_epoch_summaries(tmp_path):
    module = fake_wandb()
    t = tracker(tmp_path, module=module)
    t.close()
    m = module.run.metrics
    assert m["*"] == {"step_metric": "epoch"} and m["epoch"] == {"hidden": True}
    for head in ("mask", "gender", "age", "composite", "mean"):
        assert m[f"val/{head}/f1"] == {"summary": "max"} and m[f"val/{head}/loss"] == {"summary": "min"}
    assert m["val/mask/acc"] == {"summary": "max"} and m["train/loss"] == {"summary": "min"}


def test_best_checkpoint_and_oof_are_artifacts_of_a_finished_run(tmp_path):
    run_dir = tmp_path / "trk" / "4"
    run_dir.mkdir(parents=True)
    (run_dir / "best.pt").write_bytes(b"weights")
    (run_dir / "oof.csv").write_text("image_id\n1\n")
    module = fake_wandb()
    t = tracker(run_dir, module=module)
    rows = {epoch: {"val/composite/f1": f1, "val/age/f1_>=60": 0.1, "train/loss": 1.0}
            for epoch, f1 in ((1, 0.3), (2, 0.5), (3, 0.4))}
    for epoch, row in rows.items():
        t.log_epoch(epoch, row)
    t.publish_final(rows[2], 2)   # what the engine calls when its epochs are done
    t.close()
    logged = {a.type: (a, aliases) for a, aliases in module.run.artifacts}
    model, aliases = logged["model"]
    assert model.name == "trk-trk-4-model" and model.files == [(str(run_dir / "best.pt"), "immutable")]
    assert model.metadata == {"best/val/composite/f1": 0.5, "best/epoch": 2.0} and "best" in aliases
    assert logged["predictions"][0].files == [(str(run_dir / "oof.csv"), "immutable")]
    # closing publishes nothing (a run that stopped on an exception never calls publish_final); artifacts can be
    # switched off
    for overrides, publish in (((), False), (("tracking.wandb.artifacts=false",), True)):
        module = fake_wandb()
        t = tracker(run_dir, *overrides, module=module)
        t.log_epoch(1, {"val/composite/f1": 0.5})
        if publish:
            t.publish_final({"val/composite/f1": 0.5}, 1)
        t.close()
        assert module.run.artifacts == []


def test_after_a_resume_the_published_best_is_the_earlier_process_epoch(tmp_path):
    """No epoch of the resumed process improved: best.pt holds an epoch trained before the resume."""
    run_dir = tmp_path / "trk" / "6"
    run_dir.mkdir(parents=True)
    (run_dir / "best.pt").write_bytes(b"weights")
    first = tracker(run_dir, module=fake_wandb())
    for epoch, f1 in ((1, 0.3), (2, 0.7), (3, 0.5)):
        first.log_epoch(epoch, {"val/composite/f1": f1, "val/age/loss": 1.0 / epoch})
    first.close()   # stopped after epoch 3; the resumed process trains epoch 4, no better than epoch 2
    module = fake_wandb()
    second = tracker(run_dir, module=module)
    second.log_epoch(4, {"val/composite/f1": 0.6, "val/age/loss": 0.2})
    second.publish_final({}, None, best_value=0.7)
    second.close()
    [(model, _)] = [(a, aliases) for a, aliases in module.run.artifacts if a.type == "model"]
    assert model.metadata == {"best/val/composite/f1": 0.7, "best/val/age/loss": 0.5, "best/epoch": 2.0}
    # without metrics.csv, only the monitored value is known: no epoch is named
    module = fake_wandb()
    third = tracker(run_dir / "nocsv", "tracking.csv=false", module=module)
    (run_dir / "nocsv" / "best.pt").write_bytes(b"weights")
    third.publish_final({}, None, best_value=0.7)
    third.close()
    assert module.run.artifacts[0][0].metadata == {"best/val/composite/f1": 0.7}


def test_kfold_runs_are_grouped_by_their_run_with_the_fold_as_job_type(tmp_path):
    module = fake_wandb()
    tracker(tmp_path / "trk" / "3" / "fold1", module=module).close()
    assert module.inits[0]["group"] == "trk/3" and module.inits[0]["job_type"] == "fold1"
    module = fake_wandb()
    tracker(tmp_path / "trk" / "3" / "fold2", "tracking.wandb.group=mine", module=module).close()
    assert module.inits[0]["group"] == "mine"
    module = fake_wandb()
    tracker(tmp_path / "trk" / "5", module=module).close()
    assert module.inits[0]["group"] is None and module.inits[0]["job_type"] == "train"   # a plain run


def test_tensorboard_hparams_hold_the_best_epochs_metrics(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    cfg = load_config(None, ["name=trk", "tracking.wandb.mode=disabled", "train.lr=0.0042"])
    t = Tracker(run_dir=tmp_path, cfg=cfg, console=Console(file=io.StringIO()))
    rows = {epoch: {"val/composite/f1": f1, "val/age/loss": 1.0 / epoch}
            for epoch, f1 in ((1, 0.3), (2, 0.6), (3, 0.5))}
    for epoch, row in rows.items():
        t.log_epoch(epoch, row)
    t.publish_final(rows[2], 2)
    t.close()
    acc = EventAccumulator(str(tmp_path / "tb"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    assert [e.value for e in acc.Scalars("best/val/composite/f1")] == [pytest.approx(0.6)]
    assert [e.value for e in acc.Scalars("best/val/age/loss")] == [pytest.approx(0.5)]
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = start.session_start_info.hparams
    assert hparams["train.lr"].number_value == pytest.approx(0.0042)
    assert hparams["model.backbone"].string_value == "resnet18"


def test_images_and_tables_go_through_the_same_wandb_module_as_the_run(tmp_path):
    import numpy as np

    from multitask.metrics.figures import confusion_figure

    module = fake_wandb()
    t = tracker(tmp_path, module=module)
    t.log_images({"report/confusion": confusion_figure(np.eye(2, dtype=int), ["a", "b"], "mask")})
    t.log_tables({"report/summary": (["head", "F1"], [["age", 0.71]])})
    t.close()
    (_, images), (_, tables) = module.run.logged
    kind, image = images["report/confusion"]
    assert kind == "image" and image.ndim == 3 and image.shape[2] == 3
    assert tables == {"report/summary": ("table", ["head", "F1"], [["age", "0.71"]])}


def test_epoch_confusion_images_are_drawn_straight_to_rgb_as_the_reports_png(tmp_path, monkeypatch):
    import cv2
    import numpy as np

    from multitask.metrics.figures import confusion_figure

    matrix, classes = np.array([[5, 1, 0], [2, 3, 1], [0, 0, 4]]), ["wear", "incorrect", "not_wear"]
    png = np.frombuffer(confusion_figure(matrix, classes, "mask"), np.uint8)
    expected = cv2.cvtColor(cv2.imdecode(png, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    monkeypatch.setattr(cv2, "imdecode", lambda *args: pytest.fail("no PNG round trip per epoch"))
    module = fake_wandb()
    t = tracker(tmp_path, module=module)
    t.log_confusion("mask", matrix, classes, step=3)
    t.close()
    [(step, images)] = module.run.logged
    kind, image = images["confusion/mask"]
    assert step == 3 and image.dtype == np.uint8
    np.testing.assert_array_equal(image, expected)   # the same pixels as the report's figure


# ---------------------------------------------------------------------------------------------- the engine publishes
class Stop(Exception):
    """Stands in for what may end a run half-way: a bug, KeyboardInterrupt, optuna.TrialPruned from a callback."""


class RaiseAfter(Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, state, metrics):
        if state.epoch == self.epoch:
            raise Stop(f"stopped after epoch {state.epoch}")


def _engine_with(monkeypatch, module):
    monkeypatch.setitem(sys.modules, "wandb", module)   # what every Tracker of the training imports


def _published(module):
    return {a.type: a.metadata for a, _ in module.run.artifacts}


def _best_row(run_dir):
    """best.pt's epoch and that epoch's val/ metrics (per-class F1 aside) from metrics.csv, as published."""
    epoch = load_checkpoint(run_dir / "best.pt")["epoch"]
    row = pd.read_csv(run_dir / "metrics.csv").set_index("epoch").loc[epoch]
    return epoch, {f"best/{k}": v for k, v in row.items() if k.startswith("val/") and "/f1_" not in k}


def test_a_run_that_raises_mid_fit_publishes_nothing_and_a_normal_run_its_best_epoch(tiny_cfg, monkeypatch):
    cfg = tiny_cfg("tracking.wandb.mode=offline", "train.epochs=2")
    module = fake_wandb()
    _engine_with(monkeypatch, module)
    run_dir = Path(cfg.output_dir) / "raised"
    with pytest.raises(Stop):
        fit(cfg, run_dir, callbacks=[RaiseAfter(1)])
    assert (run_dir / "best.pt").is_file() and module.run.finished is not None   # closed, but nothing published
    assert module.run.artifacts == []
    module = fake_wandb()
    _engine_with(monkeypatch, module)
    run_dir = Path(cfg.output_dir) / "normal"
    best_metrics = fit(cfg, run_dir)
    epoch, row = _best_row(run_dir)
    published = _published(module)
    assert set(published) == {"model", "predictions"} and published["model"] == published["predictions"]
    assert published["model"]["best/epoch"] == epoch
    assert published["model"]["best/val/composite/f1"] == load_checkpoint(run_dir / "best.pt")["metric"]["value"]
    assert published["model"] == pytest.approx({**row, "best/epoch": epoch})
    assert best_metrics["val/composite/f1"] == published["model"]["best/val/composite/f1"]


def test_a_resumed_run_publishes_the_epoch_best_pt_holds(tiny_cfg, monkeypatch):
    import multitask.train.trainer as engine

    run_dir = Path(tiny_cfg().output_dir) / "resumed"
    _engine_with(monkeypatch, fake_wandb())
    fit(tiny_cfg("tracking.wandb.mode=offline", "train.epochs=1"), run_dir)
    real = engine.evaluate

    def no_better(*args, **kwargs):   # the resumed epoch does not beat epoch 1: best.pt stays epoch 1's
        metrics, scores = real(*args, **kwargs)
        return {**metrics, "val/composite/f1": -1.0}, scores

    monkeypatch.setattr(engine, "evaluate", no_better)
    module = fake_wandb()
    _engine_with(monkeypatch, module)
    assert fit(tiny_cfg("tracking.wandb.mode=offline", "train.epochs=2"), run_dir,
               ckpt=load_checkpoint(run_dir / "last.pt")) == {}
    epoch, row = _best_row(run_dir)
    assert epoch == 1 and pd.read_csv(run_dir / "metrics.csv")["epoch"].tolist() == [1, 2]
    assert _published(module)["model"] == pytest.approx({**row, "best/epoch": 1.0})

