"""Registries are the one source of choices, and a way in from outside: a loss, a weighting and a sink defined here,
registered, chosen by name in a config, validated as the built-in ones are, and trained with."""
import sys
import typing
from importlib.metadata import EntryPoint

import pytest
import torch
import torch.nn.functional as F
from helpers import error_line, tiny_overrides

from multitask.cli import build_parser, main
from multitask.config import ConfigError, TrainConfig, load_config, registered
from multitask.config.registered import choices
from multitask.config.schema import DistillConfig
from multitask.heads import LOSS_NAMES, YEAR_LOSS_NAMES
from multitask.infer.tta import MERGES
from multitask.model.losses import LOSSES, YEAR_LOSSES, register_loss
from multitask.model.weighting import WEIGHTINGS, Static, register_weighting
from multitask.tracking import SINKS, Sink, register_sink
from multitask.train import run_training
from multitask.train.optim import SCHEDULES
from multitask.utils import plugins

QUICKSTART = "configs/quickstart.yaml"


@pytest.fixture(autouse=True)
def registries_restored():
    """What a test here registers is gone after it: the registries are the process's, and the other tests' modules
    (tests/unit/test_losses.py) hold them to the built-in names."""
    # copied now: registered._REGISTERED's lists are appended to in place by a registration
    kept = [(registry, {key: list(value) if isinstance(value, list) else value for key, value in registry.items()})
            for registry in (LOSSES, YEAR_LOSSES, WEIGHTINGS, SINKS, registered._REGISTERED)]
    loaded = list(plugins._LOADED)
    yield
    for registry, before in kept:
        registry.clear()
        registry.update(before)
    plugins._LOADED[:] = loaded


def literal(cls, key: str) -> tuple:
    tp = typing.get_type_hints(cls)[key]
    return typing.get_args(tp)


def test_every_schema_choice_list_is_its_registry():
    """The schema's Literal lists the built-in names; with the registered ones they are the registry's keys."""
    assert tuple(WEIGHTINGS) == tuple(choices("train.loss_weighting", literal(TrainConfig, "loss_weighting")))
    assert set(LOSSES) | set(YEAR_LOSSES) == set(choices("loss", (*LOSS_NAMES, *YEAR_LOSS_NAMES)))
    assert literal(TrainConfig, "scheduler") == SCHEDULES
    assert literal(DistillConfig, "merge") == tuple(MERGES)
    assert set(SINKS) == set(choices("tracking.sinks"))
    predict = build_parser()._subparsers._group_actions[0].choices["predict"]
    merge = next(a for a in predict._actions if a.dest == "merge")
    assert tuple(merge.choices) == tuple(MERGES)


class Recorder(Sink):
    """Every epoch's metrics as the Tracker fans them out (the epoch rows carry an `epoch` value)."""
    name = "recorder"

    def __init__(self):
        self.epochs: list[dict[str, float]] = []
        self.closed = False

    def log_scalars(self, values, step):
        if "epoch" in values:
            self.epochs.append(dict(values))

    def close(self, exit_code=0):
        self.closed = True


CALLS = {"loss": 0}


def smooth_l1_on_probabilities(logits, target, *, spec, class_weights=None):
    """A loss written outside the package: smooth L1 between the class probabilities and the one-hot target."""
    CALLS["loss"] += 1
    onehot = F.one_hot(target, spec.num_classes).float()
    return F.smooth_l1_loss(logits.float().softmax(1), onehot)


def test_a_plugged_in_loss_and_sink_are_chosen_by_name_and_train(tiny_cfg):
    with pytest.raises(ConfigError, match="unknown loss 'plugin_l1'"):
        tiny_cfg("heads.mask.loss={plugin_l1: 1.0}")
    with pytest.raises(ConfigError, match="unknown sink 'recorder'"):
        tiny_cfg("tracking.sinks=[recorder]")
    named: list[Recorder] = []
    register_loss("plugin_l1", smooth_l1_on_probabilities)
    register_sink("recorder", lambda run_dir, cfg: named.append(Recorder()) or named[-1])
    given = Recorder()
    cfg = tiny_cfg("heads.mask.loss={plugin_l1: 0.5, ce: 0.5}", "tracking.sinks=[recorder]", "train.epochs=2",
                   "train.decisions=off")
    run_dir = run_training(cfg, sinks=[given])
    assert CALLS["loss"] > 0 and (run_dir / "best.pt").is_file()
    assert len(named) == 1
    for sink in (named[0], given):   # every epoch's metrics, as metrics.csv has them
        assert [row["epoch"] for row in sink.epochs] == [1.0, 2.0] and sink.closed
        assert all({"train/mask/loss", "val/mask/f1", "val/composite/f1"} <= set(row) for row in sink.epochs)


class HalfStatic(Static):
    """A weighting written outside the package: the static sum, halved."""

    def combine(self, losses):
        return super().combine(losses) * 0.5


def test_a_plugged_in_weighting_is_a_choice_of_train_loss_weighting(tiny_cfg):
    with pytest.raises(ConfigError, match="invalid choice 'half_static'"):
        load_config(QUICKSTART, ["train.loss_weighting=half_static"])
    register_weighting("half_static", HalfStatic)
    assert load_config(QUICKSTART, ["train.loss_weighting=half_static"]).train.loss_weighting == "half_static"
    with pytest.raises(ValueError, match="taken"):
        register_weighting("static", HalfStatic)
    with pytest.raises(TypeError):
        register_weighting("not_a_weighting", object)
    assert isinstance(WEIGHTINGS["half_static"](heads=tiny_cfg().trained_heads()), torch.nn.Module)


PLUGIN = '''
import torch.nn.functional as F

from multitask.model.losses import register_loss
from multitask.tracking import Sink, register_sink

SEEN = []


def hinge_on_probabilities(logits, target, *, spec, class_weights=None):
    return F.multi_margin_loss(logits.float(), target)


class Epochs(Sink):
    name = "epochs_seen"

    def log_scalars(self, values, step):
        if "epoch" in values:
            SEEN.append(values["epoch"])


register_loss("plugin_hinge", hinge_on_probabilities)
register_sink("epochs_seen", lambda run_dir, cfg: Epochs())
'''


def _plugin(tmp_path, monkeypatch, text=PLUGIN, name="outside_plugin"):
    (tmp_path / f"{name}.py").write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("MULTITASK_PLUGINS", name)
    return name


def test_a_plugin_named_in_the_environment_is_in_train_help_and_trains_from_the_cli(synth_root, tmp_path, monkeypatch,
                                                                                  capsys):
    _plugin(tmp_path, monkeypatch)
    with pytest.raises(SystemExit) as done:   # the command line imports the plugin before it builds --help
        main(["train", "--help"])
    assert done.value.code == 0
    listed = {line.split(":")[0].strip(): line for line in capsys.readouterr().out.splitlines()
              if line.startswith("  ")}
    assert "plugin_hinge" in listed["heads.<head>.loss"] and "epochs_seen" in listed["tracking.sinks"]
    assert "pcgrad" in listed["train.loss_weighting"]
    args = ["train", "--config", QUICKSTART, *tiny_overrides(synth_root, tmp_path), "train.epochs=2",
            "heads.mask.loss={plugin_hinge: 1.0}", "tracking.sinks=[epochs_seen]", "train.decisions=off"]
    assert main(args) == 0
    assert sys.modules["outside_plugin"].SEEN == [1.0, 2.0]


def test_an_entry_point_plugin_is_loaded_once_and_a_broken_one_is_one_line(tmp_path, monkeypatch, capsys):
    runs = tmp_path / "imported.txt"   # the plugin leaves a mark each time its module body runs
    (tmp_path / "packaged_plugin.py").write_text(f"open({str(runs)!r}, 'a').write('x')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    points = [EntryPoint(name="packaged", value="packaged_plugin", group=plugins.GROUP)]
    monkeypatch.setattr(plugins, "entry_points", lambda group: points if group == plugins.GROUP else [])
    monkeypatch.delenv("MULTITASK_PLUGINS", raising=False)
    loaded = plugins.load_plugins()
    assert "packaged_plugin" in loaded and plugins.load_plugins() == loaded
    assert runs.read_text() == "x"   # imported once however often it is asked for
    _plugin(tmp_path, monkeypatch, text="raise RuntimeError('no GPU library here')\n", name="broken_plugin")
    assert main(["config", "show", "--config", QUICKSTART]) == 2
    line = error_line(capsys)
    assert line.startswith("plugin broken_plugin (from MULTITASK_PLUGINS) failed to import") and "no GPU" in line
