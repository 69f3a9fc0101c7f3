"""MultiHeadNet: one timm trunk, one small classifier per head, a dict of logits out.

    model = create_model(cfg)                      # heads = cfg.trained_heads(), normalisation from cfg.data
    logits = model(images_uint8)                   # {"mask": (N, 3), "gender": (N, 2), "age": (N, 3)}

A head with `target: years` (`YearsHead`) gives class log-probabilities under its name (softmax of them is its class
probabilities, so every consumer treats it as a plain head) and its year logits under `years_key(name)`
("age/years": (N, num_years)), which the year losses, the MAE metric and the `pred/age/years` column read.

The model takes raw pixels (uint8, or float in 0..255) and normalises them itself with buffers `mean*255` / `std*255`:
the loader hands out uint8 (4x less host->device traffic), normalisation happens once per batch on the device, and a
checkpoint carries the normalisation it was trained with.
"""
from __future__ import annotations

import dataclasses
import difflib
from typing import Sequence

import timm
import torch
from torch import nn

from ..heads import HeadSpec, years_key
from ..utils.errors import UserError, short_error
from .normalization import IMAGENET_MEAN, IMAGENET_STD, resolve_normalization
from .weights import load_strict, load_trunk_weights


class MultiHeadNet(nn.Module):
    def __init__(self, *, backbone: str, heads: Sequence[HeadSpec], pretrained: bool | str = False,
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        super().__init__()
        names = [h.name for h in heads]
        assert names, "MultiHeadNet needs at least one head"
        assert all(names) and len(set(names)) == len(names), f"head names must be unique and non-empty: {names}"
        assert not any("." in n for n in names), f"head names cannot contain '.': {names}"
        assert len(mean) == len(std) and min(std) > 0, f"mean/std need one positive std per channel: {mean}, {std}"
        self.backbone = backbone
        self.head_specs = list(heads)
        self.trunk = build_trunk(backbone, pretrained=pretrained, drop_rate=drop_rate, drop_path_rate=drop_path_rate)
        # some trunks (mobilenetv3) pool into a wider head_hidden_size than num_features
        width = getattr(self.trunk, "head_hidden_size", None) or self.trunk.num_features
        self.heads = nn.ModuleDict({h.name: make_classifier(width, h) for h in heads})
        # persistent buffers: the state dict (and so every checkpoint) carries the normalisation
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1) * 255)

    @property
    def head_names(self) -> list[str]:
        return list(self.heads.keys())

    @property
    def num_features(self) -> int:
        return getattr(self.trunk, "head_hidden_size", None) or self.trunk.num_features

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        assert x.ndim == 4 and x.shape[1] == self.mean.shape[1], \
            f"expected images N x {self.mean.shape[1]} x H x W, got {tuple(x.shape)}"
        # elementwise ops keep channels_last when the input has it
        return (x.to(self.mean.dtype) - self.mean) / self.std

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled trunk features (N, num_features) from raw 0..255 pixels."""
        return self.trunk(self.normalize(x))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.features(x)
        out = {}
        for name, head in self.heads.items():
            if isinstance(head, YearsHead):
                out[name], out[years_key(name)] = head(f)
            else:
                out[name] = head(f)
        return out


def make_classifier(width: int, spec: HeadSpec) -> nn.Module:
    if spec.target == "years":
        return YearsHead(width, spec)
    return make_layers(width, spec, spec.num_classes)


def make_layers(width: int, spec: HeadSpec, outputs: int) -> nn.Sequential:
    if spec.hidden > 0:
        return nn.Sequential(nn.Linear(width, spec.hidden), nn.GELU(), nn.Dropout(spec.dropout),
                             nn.Linear(spec.hidden, outputs))
    return nn.Sequential(nn.Dropout(spec.dropout), nn.Linear(width, outputs))


class YearsHead(nn.Module):
    """Logits over whole years -> (class log-probabilities, year logits).

    A class's log-probability is the logsumexp of the year log-probabilities inside its bins: the class
    probabilities are exactly the year distribution summed over the bins, they sum to 1, and log-softmax of them is
    themselves, so the class losses, metrics, TTA merges, ensembles and exports take them as any head's logits.
    In float32 (a bf16 log-softmax over 101 years loses the small classes' mass)."""

    def __init__(self, width: int, spec: HeadSpec):
        super().__init__()
        self.years = make_layers(width, spec, spec.num_years)
        member = torch.from_numpy(spec.year_classes())[:, None] == torch.arange(spec.num_classes)[None, :]
        # (num_years, num_classes): 0 where the year is in the class, a large negative number elsewhere (finite:
        # every class holds a year, and a finite mask exports to ONNX without inf constants); not saved: the spec
        # rebuilds it
        self.register_buffer("outside", (~member).float() * -1e9, persistent=False)

    def forward(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        year_logits = self.years(f)
        log_p = year_logits.float().log_softmax(-1)
        return torch.logsumexp(log_p[:, :, None] + self.outside[None], dim=1), year_logits


def create_model(cfg, heads: Sequence[HeadSpec] | None = None) -> MultiHeadNet:
    """The model a config describes; heads default to the heads that train (cfg.trained_heads()). data.mean/std
    `auto` resolve as normalization.py says (a training pins them in its config first)."""
    m = cfg.model
    norm = resolve_normalization(cfg)
    return MultiHeadNet(backbone=m.backbone, heads=list(heads) if heads is not None else cfg.trained_heads(),
                        pretrained=m.pretrained, drop_rate=m.drop_rate, drop_path_rate=m.drop_path_rate,
                        mean=norm.mean, std=norm.std)


# --------------------------------------------------------------------------------------------- trunk
def build_trunk(backbone: str, *, pretrained: bool | str = False, drop_rate: float = 0.0,
                drop_path_rate: float = 0.0) -> nn.Module:
    """timm model without classifier (num_classes=0: forward gives pooled features)."""
    check_backbone(backbone)
    kwargs = {"num_classes": 0}
    # only pass rates that are set: not every timm model accepts them (vgg has no drop_path_rate)
    if drop_rate > 0:
        kwargs["drop_rate"] = drop_rate
    if drop_path_rate > 0:
        kwargs["drop_path_rate"] = drop_path_rate
    from_hub = pretrained is True
    try:
        trunk = timm.create_model(backbone, pretrained=from_hub, **kwargs)
    except TypeError as err:
        if "unexpected keyword" not in str(err):
            raise
        bad = next((k for k in ("drop_path_rate", "drop_rate") if k in str(err)), "drop_rate")
        raise UserError(f"model.{bad}: backbone '{backbone}' does not support it; set model.{bad}=0") from None
    except UserError:
        raise
    except Exception as err:  # hub / urllib / requests / OSError: all mean "the weights could not be fetched"
        if not from_hub:
            raise
        raise UserError("model.pretrained: true needs the timm hub (internet) and it could not be reached: "
                        f"{short_error(err, kind=True)}; use model.pretrained=false or "
                        "model.pretrained=/path/to/weights.(pth|safetensors)") from None
    if isinstance(pretrained, str) and pretrained.strip():
        report = load_trunk_weights(trunk, pretrained, backbone=backbone)
        trunk.weights_report = report
    return trunk


def check_backbone(backbone: str) -> None:
    if backbone.startswith(("hf-hub:", "hf_hub:", "local-dir:")) or timm.is_model(backbone):
        return
    near = difflib.get_close_matches(backbone, timm.list_models(), n=5, cutoff=0.6)
    hint = f"; close matches: {', '.join(near)}" if near else ""
    raise UserError(f"model.backbone: unknown timm model '{backbone}'{hint} (all names: timm.list_models())")


def rebuild(cfg, head_names: Sequence[str], state: dict, *, where: str, described_by: str) -> MultiHeadNet:
    """The model `cfg` describes with these trained heads, `state` loaded strictly: the one way a saved model comes
    back (a checkpoint, a safetensors export). Offline: the weights are all in `state`, so neither the hub nor a
    local pretrained file named in the config is read. A mismatch is one UserError naming `where`."""
    offline = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, pretrained=False))
    net = create_model(offline, [cfg.heads[n] for n in head_names])
    load_strict(net, state, where=where, what=f"the model {described_by} describes ({cfg.model.backbone}, heads "
                                              f"{list(head_names)})")
    return net.eval()
