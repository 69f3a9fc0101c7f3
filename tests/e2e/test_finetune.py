"""Fine-tuning pretrained trunks: normalisation from the weights (`auto`), frozen first epochs, the real pretrained
files in ../shared/weights, and the errors a wrong file gives."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml
from helpers import REPO, error_line, tiny_overrides
from safetensors.torch import save_file

from multitask.cli import main
from multitask.config import load_config
from multitask.model.net import build_trunk
from multitask.model.normalization import IMAGENET_MEAN, IMAGENET_STD, pin_normalization, resolve_normalization
from multitask.runs.checkpoint import load_checkpoint
from multitask.train.callbacks import Callback
from multitask.train.run import fit, run_training
from multitask.utils.errors import UserError

WEIGHTS = REPO.parent / "shared" / "weights"   # read-only, beside the checkout (and CI's)
LITE0 = WEIGHTS / "tf_efficientnet_lite0.imagenet.safetensors"
SHARED = [("tf_efficientnet_lite0", "tf_efficientnet_lite0.imagenet.safetensors"),
          ("tf_efficientnet_lite2", "tf_efficientnet_lite2.imagenet.safetensors"),
          ("mobilenetv1_100", "mobilenetv1_100.faceres.safetensors")]
needs_weights = pytest.mark.skipif(not LITE0.is_file(), reason="the shared pretrained weights are not beside the repo")


def _trunk_file(tmp_path: Path, metadata: dict | None = None, backbone: str = "test_resnet") -> Path:
    """A trunk's own weights as a safetensors file (what a converted pretrained trunk looks like), seeded."""
    torch.manual_seed(123)
    path = tmp_path / f"{backbone}.safetensors"
    save_file({k: v.contiguous() for k, v in build_trunk(backbone).state_dict().items()}, str(path),
              metadata=metadata)
    return path


@needs_weights
def test_auto_normalisation_comes_from_the_weights_and_imagenet_for_a_trunk_from_scratch():
    lite0 = load_config(None, ["model.backbone=tf_efficientnet_lite0", f"model.pretrained={LITE0}"])
    norm = resolve_normalization(lite0)
    assert norm.mean == norm.std == (0.5, 0.5, 0.5)
    assert "timm's pretrained_cfg for tf_efficientnet_lite0" in norm.why and norm.native_size == (224, 224)
    scratch = resolve_normalization(load_config(None, ["model.backbone=tf_efficientnet_lite0"]))
    assert (scratch.mean, scratch.std) == (IMAGENET_MEAN, IMAGENET_STD) and "from scratch" in scratch.why
    resnet = resolve_normalization(load_config(None, ["model.backbone=resnet18", "model.pretrained=/x/r18.pth"]))
    assert (resnet.mean, resnet.std) == (IMAGENET_MEAN, IMAGENET_STD) and "resnet18" in resnet.why


def test_a_files_metadata_wins_and_an_explicit_value_wins_over_both(tmp_path):
    path = _trunk_file(tmp_path, {"mean": "[0.1, 0.2, 0.3]", "std": "0.9,0.8,0.7", "input_size": "[3, 112, 96]"})
    cfg = load_config(None, ["model.backbone=test_resnet", f"model.pretrained={path}"])
    norm = pin_normalization(cfg)
    assert cfg.data.mean == [0.1, 0.2, 0.3] and cfg.data.std == [0.9, 0.8, 0.7]
    assert norm.why == "from the metadata of test_resnet.safetensors" and norm.native_size == (112, 96)
    assert pin_normalization(cfg).why == norm.why   # idempotent, and says the same once pinned
    mixed = resolve_normalization(load_config(None, ["model.backbone=test_resnet", f"model.pretrained={path}",
                                                     "data.std=[0.5,0.5,0.5]"]))
    assert mixed.mean == (0.1, 0.2, 0.3) and mixed.std == (0.5, 0.5, 0.5) and mixed.mismatch
    assert "data.std set in the config" in mixed.why and "the weights expect" in mixed.describe()


def test_a_file_whose_metadata_is_not_a_normalisation_is_one_line(tmp_path):
    path = _trunk_file(tmp_path, {"mean": "0.5,0.5", "std": "[0.5, 0.5, 0.5]"})
    with pytest.raises(UserError, match=r"test_resnet.safetensors: metadata mean='0.5,0.5' is not 3 numbers"):
        resolve_normalization(load_config(None, ["model.backbone=test_resnet", f"model.pretrained={path}"]))


def test_a_run_saves_and_trains_with_the_weights_normalisation(tiny_cfg, tmp_path, capsys):
    path = _trunk_file(tmp_path, {"mean": "[0.1, 0.2, 0.3]", "std": "[0.9, 0.8, 0.7]"})
    run_dir = run_training(tiny_cfg(f"model.pretrained={path}", "train.max_steps=1"))
    out = capsys.readouterr().out
    assert "normalisation mean (0.1, 0.2, 0.3) std (0.9, 0.8, 0.7): from the metadata of test_resnet" in out
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["data"]["mean"] == [0.1, 0.2, 0.3] and saved["data"]["std"] == [0.9, 0.8, 0.7]
    buffers = load_checkpoint(run_dir / "last.pt")["model"]
    torch.testing.assert_close(buffers["mean"].flatten(), torch.tensor([0.1, 0.2, 0.3]) * 255)
    # resuming with the same config (still `auto`) is the same training, not a changed normalisation
    resumed = run_training(tiny_cfg(f"model.pretrained={path}", "train.epochs=2"), resume=str(run_dir))
    assert resumed == run_dir and load_checkpoint(run_dir / "last.pt")["epoch"] == 2


class Snapshots(Callback):
    """The model's weights when training starts and after each epoch (copies)."""

    def __init__(self):
        self.seen = []

    def on_fit_start(self, state):
        self.seen.append(copy.deepcopy(state.model.state_dict()))

    def on_epoch_end(self, state, metrics):
        self.seen.append(copy.deepcopy(state.model.state_dict()))


def _changed(a: dict, b: dict, prefix: str) -> list[str]:
    return [k for k in a if k.startswith(prefix) and not torch.equal(a[k], b[k])]


def test_a_frozen_first_epoch_trains_the_heads_alone_then_the_whole_net(tiny_cfg, tmp_path, capsys):
    path = _trunk_file(tmp_path)
    snaps = Snapshots()
    cfg = tiny_cfg(f"model.pretrained={path}", "train.freeze_trunk_epochs=1", "train.epochs=2")
    fit(cfg, tmp_path / "run", callbacks=[snaps])
    start, one, two = snaps.seen
    trunk_keys = [k for k in start if k.startswith("trunk.")]
    assert not _changed(start, one, "trunk.")                        # epoch 1: weights and BN statistics as loaded
    assert _changed(start, one, "heads.")                            # ... while the heads learn
    moved = _changed(one, two, "trunk.")                             # epoch 2: the whole net
    assert len(moved) > len(trunk_keys) // 2 and any(k.endswith("running_mean") for k in moved)
    out = capsys.readouterr().out
    assert "epoch 1: trunk frozen (heads only)" in out and "epoch 2: trunk unfrozen" in out


def test_a_run_resumed_at_the_unfreeze_equals_the_straight_run_bit_for_bit(tiny_cfg, tmp_path):
    path = _trunk_file(tmp_path)
    overrides = (f"model.pretrained={path}", "train.freeze_trunk_epochs=1", "train.epochs=2", "deterministic=true",
                 "train.amp=off", "train.warmup_epochs=0.5", "train.layer_decay=0.7", "train.trunk_lr_scale=0.3")
    straight = load_checkpoint(run_training(tiny_cfg(*overrides)) / "last.pt")
    first = run_training(tiny_cfg(*overrides, "train.max_steps=6"))   # 84 images / 16 = 6 steps = epoch 1
    assert load_checkpoint(first / "last.pt")["epoch"] == 1
    resumed = load_checkpoint(run_training(tiny_cfg(*overrides), resume=str(first)) / "last.pt")
    assert resumed["epoch"] == straight["epoch"] == 2
    for key, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
    assert [g["lr"] for g in straight["optimizer"]["param_groups"]] == \
        [g["lr"] for g in resumed["optimizer"]["param_groups"]]


@needs_weights
@pytest.mark.parametrize("backbone,file", SHARED)
def test_the_shared_pretrained_trunks_load_strictly_and_train_a_step(tiny_cfg, backbone, file, capsys):
    trunk = build_trunk(backbone, pretrained=str(WEIGHTS / file))
    assert not trunk.weights_report["missing"] and not trunk.weights_report["unexpected"]
    run_dir = run_training(tiny_cfg(f"model.backbone={backbone}", f"model.pretrained={WEIGHTS / file}",
                                    "train.max_steps=1", "train.trunk_lr_scale=0.1", "train.layer_decay=0.8"))
    assert load_checkpoint(run_dir / "last.pt")["step"] == 1
    assert f"timm's pretrained_cfg for {backbone}" in capsys.readouterr().out


@needs_weights
def test_weights_of_another_backbone_are_one_line_exit_2(synth_root, tmp_path, capsys):
    code = main(["train", "--config", "configs/quickstart.yaml", *tiny_overrides(
        synth_root, tmp_path, "model.backbone=tf_efficientnet_lite2", f"model.pretrained={LITE0}")])
    assert code == 2
    line = error_line(capsys)
    assert line.startswith(f"model.pretrained: {LITE0} does not fit backbone 'tf_efficientnet_lite2'")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.pt"))


@pytest.mark.parametrize("weighting", ["pcgrad", "cagrad"])
def test_gradient_level_weightings_train_the_heads_while_the_trunk_is_frozen(tiny_cfg, tmp_path, weighting):
    """With the trunk frozen there is no shared gradient to combine: the heads' own backward alone, then the whole
    net with the weighting as usual."""
    snaps = Snapshots()
    fit(tiny_cfg(f"train.loss_weighting={weighting}", "train.freeze_trunk_epochs=1", "train.epochs=2"),
        tmp_path / "run", callbacks=[snaps])
    start, one, two = snaps.seen
    assert not _changed(start, one, "trunk.") and _changed(start, one, "heads.") and _changed(one, two, "trunk.")


def test_freeze_bn_keeps_the_trunks_statistics_while_its_weights_train(tiny_cfg, tmp_path):
    """Weights with batch norm folded into the convolutions carry identity statistics: train-mode batch norm would
    swap them for batch statistics and change the function the trunk computes."""
    snaps = Snapshots()
    fit(tiny_cfg(f"model.pretrained={_trunk_file(tmp_path)}", "train.freeze_bn=true"), tmp_path / "run",
        callbacks=[snaps])
    start, one = snaps.seen
    moved = _changed(start, one, "trunk.")
    assert not [k for k in moved if k.endswith(("running_mean", "running_var"))]
    assert any(k.endswith("conv1.weight") for k in moved) and any(k.endswith("bn1.weight") for k in moved)
