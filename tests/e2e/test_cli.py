"""The command line for people: examples at the end of every --help, `config show` that loads back as the same
config."""
from __future__ import annotations

import dataclasses

import cv2
import pytest
import yaml

from multitask.cli import EXAMPLES, main
from multitask.config import load_config, to_dict

COMMANDS = [["train"], ["predict"], ["report"], ["explain"], ["synth"], ["config"], ["config", "show"],
            ["tune-decisions"], []]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "multitask")
def test_every_help_ends_with_examples(command, capsys):
    with pytest.raises(SystemExit) as done:
        main([*command, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out.rstrip("\n")
    head, _, examples = text.rpartition("\nexamples:\n")
    assert head, text[-400:]
    commands = [line.strip() for line in examples.splitlines() if not line.startswith("      ")]
    assert 2 <= len(commands) <= 4 and all(c.startswith("multitask ") for c in commands), examples
    assert examples == EXAMPLES[" ".join(command) or "multitask"].strip("\n")


def _leaves(tree: dict, prefix: str = "") -> set[str]:
    out = set()
    for key, value in tree.items():
        if isinstance(value, dict) and value and key != "loss":
            out |= _leaves(value, f"{prefix}{key}.")
        else:
            out.add(f"{prefix}{key}")
    return out


@pytest.mark.parametrize("config, overrides", [
    (None, []),
    ("configs/quickstart.yaml", ["train.epochs=3", "train.amp=off", "heads.age.bins=[30,58]", "name='a: b # c'",
                                 "tracking.wandb.tags=[x, 'y z']", "train.min_lr=0.0000001", "data.limit=4"]),
    ("configs/mask_resnet18_single18.yaml", ["train.scheduler=plateau", "train.plateau_patience=3"]),
])
def test_config_show_loads_back_as_the_same_config(config, overrides, tmp_path, capsys):
    args = ["config", "show", *(["--config", config] if config else []), *overrides]
    assert main(args) == 0
    text = capsys.readouterr().out
    original = load_config(config, overrides)
    shown = tmp_path / "shown.yaml"
    shown.write_text(text)
    loaded = load_config(shown)
    # config_path records which file a config came from, so it differs by design; every setting is equal
    assert dataclasses.replace(loaded, config_path=None) == dataclasses.replace(original, config_path=None)
    expected = _leaves(to_dict(original)) - {"config_path"} - {f"heads.{h}.name" for h in original.heads}
    assert _leaves(yaml.safe_load(text)) == expected   # every key is shown
    if config == "configs/quickstart.yaml":
        lines = {line.split(":")[0].strip(): line for line in text.splitlines() if not line.startswith("#")}
        assert lines["epochs"].endswith("# default: 5") and lines["amp"].startswith("  amp: 'off'")
        assert "# default" not in lines["seed"] and lines["n_folds"].rstrip() == "  n_folds: 5"


def test_cli_synth(tmp_path, capsys):
    from multitask.cli import main

    assert main(["synth", "--out", str(tmp_path / "s"), "--people", "2", "--size", "32x40", "--seed", "1"]) == 0
    assert "14 images of 2 people" in capsys.readouterr().out
    assert main(["synth", "--out", str(tmp_path / "s"), "--people", "2"]) == 2
    assert cv2.imread(str(next((tmp_path / "s" / "eval" / "images").iterdir()))).shape == (40, 32, 3)
