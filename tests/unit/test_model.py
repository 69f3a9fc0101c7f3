"""MultiHeadNet: dict output, on-device normalisation of raw pixels, pretrained weights (hub / local file)."""
import re

import pytest
import timm
import torch

from multitask.config import load_config
from multitask.heads import HeadSpec
from multitask.model.net import MultiHeadNet, create_model
from multitask.utils.errors import UserError


def _heads(**extra):
    return [HeadSpec(name="mask", classes=["wear", "incorrect", "not_wear"], **extra),
            HeadSpec(name="gender", classes=["male", "female"])]


def _images(n=2, h=32, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, h, w), generator=g, dtype=torch.uint8)


def test_forward_returns_logits_per_head():
    model = MultiHeadNet(backbone="resnet18", heads=_heads()).eval()
    out = model(_images(n=4, h=32, w=48))
    assert list(out) == ["mask", "gender"]
    assert out["mask"].shape == (4, 3) and out["gender"].shape == (4, 2)
    assert out["mask"].dtype == torch.float32
    assert model.head_names == ["mask", "gender"]


def test_hidden_head_is_a_small_mlp():
    model = MultiHeadNet(backbone="resnet18", heads=_heads(hidden=16, dropout=0.2)).eval()
    layers = list(model.heads["mask"])
    assert [type(m).__name__ for m in layers] == ["Linear", "GELU", "Dropout", "Linear"]
    assert layers[0].in_features == 512 and layers[0].out_features == 16 and layers[-1].out_features == 3
    assert layers[2].p == 0.2
    assert [type(m).__name__ for m in model.heads["gender"]] == ["Dropout", "Linear"]
    assert model(_images())["mask"].shape == (2, 3)


def test_uint8_and_float_pixels_give_the_same_logits():
    torch.manual_seed(0)
    model = MultiHeadNet(backbone="resnet18", heads=_heads(), mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3)).eval()
    x = _images()
    with torch.no_grad():
        a, b = model(x), model(x.float())
    for name in a:
        torch.testing.assert_close(a[name], b[name])
    # the normalisation is exactly (x / 255 - mean) / std
    expected = (x.float() / 255 - torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)) / torch.tensor(
        [0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    torch.testing.assert_close(model.normalize(x), expected)
    assert "mean" in model.state_dict() and "std" in model.state_dict()   # a checkpoint carries them


def test_channels_last_input_stays_channels_last():
    model = MultiHeadNet(backbone="resnet18", heads=_heads()).eval()
    x = _images().contiguous(memory_format=torch.channels_last)
    assert model.normalize(x).is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(model(x)["mask"], model(x.contiguous())["mask"])


def test_create_model_from_config():
    cfg = load_config(None, ["data.mean=[0.5,0.5,0.5]", "data.std=[0.5,0.5,0.5]", "train.heads=[age,mask]"])
    model = create_model(cfg)
    assert model.head_names == ["age", "mask"]
    torch.testing.assert_close(model.mean.flatten(), torch.full((3,), 127.5))
    only_gender = create_model(cfg, [cfg.heads["gender"]])
    assert only_gender.head_names == ["gender"]


def test_unknown_backbone_names_close_matches():
    with pytest.raises(UserError, match=r"unknown timm model 'resnet_18'.*resnet18"):
        MultiHeadNet(backbone="resnet_18", heads=_heads())


def test_pretrained_without_network_is_one_clear_error(monkeypatch):
    import timm

    real_create = timm.create_model

    def offline(name, *, pretrained=False, **kwargs):   # timm's public entry point, as it fails with no network
        if pretrained:
            raise OSError("[Errno -2] Name or service not known")
        return real_create(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(UserError) as info:
        MultiHeadNet(backbone="resnet18", heads=_heads(), pretrained=True)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("model.pretrained: true needs the timm hub (internet) and it could not be reached")
    assert "Name or service not known" in message
    assert "model.pretrained=false" in message and "model.pretrained=/path/to/weights" in message


@pytest.mark.parametrize("wrap", ["plain", "state_dict_module", "safetensors"])
def test_local_weights_load_into_the_trunk(tmp_path, wrap):
    source = timm.create_model("resnet18", num_classes=7)   # with a classifier the trunk does not have
    with torch.no_grad():
        source.conv1.weight.normal_()
    state = source.state_dict()
    if wrap == "safetensors":
        from safetensors.torch import save_file

        path = tmp_path / "weights.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        path = tmp_path / "weights.pth"
        if wrap == "state_dict_module":
            state = {"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}
        torch.save(state, path)
    model = MultiHeadNet(backbone="resnet18", heads=_heads(), pretrained=str(path))
    torch.testing.assert_close(model.trunk.conv1.weight, source.conv1.weight)
    torch.testing.assert_close(model.trunk.layer4[1].bn2.running_var, source.layer4[1].bn2.running_var)
    report = model.trunk.weights_report
    assert report["missing"] == [] and report["unexpected"] == []   # fc.* was dropped as the classifier


def test_local_weights_problems_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="weights file not found"):
        MultiHeadNet(backbone="resnet18", heads=_heads(), pretrained=str(tmp_path / "nope.pth"))
    unrelated = tmp_path / "unrelated.pth"
    torch.save({"encoder.block.weight": torch.zeros(3)}, unrelated)
    with pytest.raises(UserError, match=r"none of the 1 tensors .* match backbone 'resnet18'"):
        MultiHeadNet(backbone="resnet18", heads=_heads(), pretrained=str(unrelated))
    wrong_shape = tmp_path / "wide.pth"
    torch.save({"conv1.weight": torch.zeros(32, 3, 7, 7)}, wrong_shape)
    with pytest.raises(UserError, match=re.escape("conv1.weight: (32, 3, 7, 7) vs (64, 3, 7, 7)")):
        MultiHeadNet(backbone="resnet18", heads=_heads(), pretrained=str(wrong_shape))


def test_partial_local_weights_warn_with_counts(tmp_path):
    state = timm.create_model("resnet18", num_classes=0).state_dict()
    state = {k: v for k, v in state.items() if not k.startswith("layer4.")}
    state["extra.weight"] = torch.zeros(2)
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.warns(UserWarning, match=r"with \d+ missing and 1 unexpected keys"):
        model = MultiHeadNet(backbone="resnet18", heads=_heads(), pretrained=str(path))
    assert all(k.startswith("layer4.") for k in model.trunk.weights_report["missing"])
    assert model.trunk.weights_report["unexpected"] == ["extra.weight"]
