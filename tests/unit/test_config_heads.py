"""Config loading/overrides/errors and the composite label scheme."""
import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from multitask.config import ConfigError, from_dict, load_config, to_dict
from multitask.experiments.space import load_space  # noqa: E402
from multitask.heads import (
    HeadSpec,
    composite_class_names,
    composite_decode,
    composite_encode,
    joint_probabilities,
    label_array,
    marginal_probabilities,
    resolve_heads,
)


@pytest.fixture()
def heads():
    return load_config().composite_heads()


def test_composite_round_trip_all_18(heads):
    seen = set()
    for m, g, a in itertools.product(range(3), range(2), range(3)):
        code = int(composite_encode({"mask": m, "gender": g, "age": a}, heads))
        assert code == m * 6 + g * 3 + a
        back = composite_decode(code, heads)
        assert (int(back["mask"]), int(back["gender"]), int(back["age"])) == (m, g, a)
        seen.add(code)
    assert seen == set(range(18))
    names = composite_class_names(heads)
    assert len(names) == 18 and names[0] == "wear/male/<30" and names[17] == "not_wear/female/>=60"


def test_composite_unlabelled_and_range(heads):
    code = composite_encode({"mask": np.array([0, -1]), "gender": np.array([1, 1]), "age": np.array([2, 0])}, heads)
    assert code.tolist() == [5, -1]
    assert composite_decode(np.array([-1]), heads)["age"].tolist() == [-1]
    with pytest.raises(ValueError):
        composite_encode({"mask": 3, "gender": 0, "age": 0}, heads)


def test_joint_and_marginal_are_inverse(heads):
    rng = np.random.default_rng(0)
    probs = {h.name: rng.dirichlet(np.ones(h.num_classes), size=5) for h in heads}
    joint = joint_probabilities(probs, heads)
    assert joint.shape == (5, 18) and np.allclose(joint.sum(1), 1)
    # column m*6+g*3+a holds p(m)p(g)p(a)
    assert np.isclose(joint[2, 1 * 6 + 0 * 3 + 2], probs["mask"][2, 1] * probs["gender"][2, 0] * probs["age"][2, 2])
    back = marginal_probabilities(joint, heads)
    for h in heads:
        assert np.allclose(back[h.name], probs[h.name])


def test_age_bins_train_vs_eval():
    cfg = load_config(None, ["heads.age.bins=[30,58]"])
    frame = pd.DataFrame({"age": [20, 29, 30, 57, 58, 59, 60, 75]})
    age = cfg.heads["age"]
    assert label_array(age, frame, cfg.heads).tolist() == [0, 0, 1, 1, 2, 2, 2, 2]
    assert label_array(age, frame, cfg.heads, eval=True).tolist() == [0, 0, 1, 1, 1, 1, 2, 2]


def test_label_array_names_indices_blanks_and_derived():
    cfg = load_config("configs/mask_resnet18_single18.yaml")
    frame = pd.DataFrame({"mask": ["wear", "not_wear", None], "gender": ["female", "1", "male"], "age": [61, 10, 40]})
    assert label_array(cfg.heads["mask"], frame, cfg.heads).tolist() == [0, 2, -1]
    assert label_array(cfg.heads["gender"], frame, cfg.heads).tolist() == [1, 1, 0]
    assert label_array(cfg.heads["class18"], frame, cfg.heads).tolist() == [0 * 6 + 3 + 2, 2 * 6 + 3 + 0, -1]
    with pytest.raises(ValueError, match="unknown class 'robot'"):
        label_array(cfg.heads["gender"], pd.DataFrame({"gender": ["robot"]}), cfg.heads)


def test_head_validation():
    with pytest.raises(ValueError, match="edges"):
        resolve_heads({"age": HeadSpec(classes=["a", "b", "c"], bins=[30])})
    with pytest.raises(ValueError, match="derive"):
        resolve_heads({"x": HeadSpec(classes=["a", "b"], derive=["nope"])})


def test_overrides_and_types(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 2\nmodel:\n  backbone: resnet34\n")
    cfg = load_config(path, ["train.lr=0.01", "train.heads=[age]", "model.pretrained=/w.pth"])
    assert (cfg.train.epochs, cfg.train.lr, cfg.model.backbone, cfg.model.pretrained) == (2, 0.01, "resnet34", "/w.pth")
    assert [h.name for h in cfg.trained_heads()] == ["age"]
    again = from_dict(to_dict(cfg))
    assert to_dict(again) == {**to_dict(cfg), "config_path": None}


@pytest.mark.parametrize("text,override,expected", [
    ("train:\n  epohcs: 2\n", None, "unknown key 'train.epohcs' (did you mean epochs"),
    ("train:\n  epochs: two\n", None, "train.epochs: expected an integer, got 'two'"),
    ("train:\n  optimizer: adamx\n", None, "train.optimizer: invalid choice 'adamx' (did you mean adam"),
    ("", "train.heads=[mask,agee]", "train.heads: unknown head 'agee' (did you mean age"),
    ("", "data.image_size=[64]", "data.image_size"),
])
def test_config_errors_name_key_and_file(tmp_path, text, override, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, [override] if override else [])
    message = str(info.value)
    assert expected in message and str(path) in message and "\n" not in message




@pytest.mark.parametrize("name", ["quickstart", "mask_effnet_b0_multihead", "mask_resnet18_single18",
                                  "age_focus_resnet34", "quickstart_single18",
                                  "realfaces_cpu", "realfaces_multisource_cpu", "realmask_only_cpu"])
def test_shipped_configs_load(name):
    cfg = load_config(f"configs/{name}.yaml")
    assert cfg.trained_heads()


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
