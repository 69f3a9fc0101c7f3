"""Which mean/std the model normalises its input with: from the config, or (`auto`) from the weights themselves.

    norm = resolve_normalization(cfg)   # Normalization(mean, std, why, native_size, expected)
    pin_normalization(cfg)             # data.mean / data.std: auto -> the resolved numbers (what a run saves)

Why: a pretrained trunk only sees the inputs it was trained on when it gets their normalisation. The EfficientNet-Lite
ImageNet weights want mean = std = 0.5, timm's resnets want ImageNet's mean/std; fed the wrong one a fine-tuned trunk
starts from features shifted by up to 2 sigma and loses much of what pretraining gave. `auto` asks, in order:
  1. a safetensors weights file's metadata (`mean`, `std`, `input_size`: "[0.5, 0.5, 0.5]" or "0.5,0.5,0.5"),
  2. timm's `pretrained_cfg` for the backbone (timm.data.resolve_data_config reads the same), when the trunk starts
     from pretrained weights (the hub or a file),
  3. ImageNet's mean/std for a trunk trained from scratch (any normalisation works there; this one is the habit).
A value the config sets wins; when it differs from what the weights expect, `Normalization.mismatch` says so.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import timm
from safetensors import safe_open

from ..utils.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
AUTO = "auto"
SCRATCH = "ImageNet's (a trunk trained from scratch)"


@dataclass(frozen=True)
class Normalization:
    mean: tuple[float, ...]
    std: tuple[float, ...]
    why: str                                      # where the numbers came from, for the run's header
    native_size: tuple[int, int] | None = None    # (height, width) the weights were trained at, when known
    expected: tuple[tuple[float, ...], tuple[float, ...]] | None = None   # what pretrained weights expect

    @property
    def mismatch(self) -> bool:
        """The config set a normalisation other than the one the pretrained weights expect."""
        if self.expected is None:
            return False
        return any(abs(a - b) > 1e-6 for a, b in zip((*self.mean, *self.std), (*self.expected[0], *self.expected[1])))

    def describe(self, image_size=None) -> str:
        fmt = lambda values: "(" + ", ".join(f"{v:.3g}" for v in values) + ")"  # noqa: E731
        text = f"normalisation mean {fmt(self.mean)} std {fmt(self.std)}: {self.why}"
        if self.native_size is not None:
            text += f"; the weights' native input is {self.native_size[0]}x{self.native_size[1]}"
            if image_size is not None:
                text += f" (training at {image_size[0]}x{image_size[1]})"
        if self.mismatch:
            text += (f"; [yellow]the weights expect mean {fmt(self.expected[0])} std {fmt(self.expected[1])}[/]: "
                     f"set data.mean/data.std to auto unless this is on purpose")
        return text


def resolve_normalization(cfg) -> Normalization:
    """What `cfg.data.mean` / `cfg.data.std` stand for (each may be `auto` or numbers), and why (module doc)."""
    weights = _weights_normalization(cfg.model.backbone, cfg.model.pretrained)
    mean, std = cfg.data.mean, cfg.data.std
    if weights is not None:
        w_mean, w_std, why, size = weights
    else:
        w_mean, w_std, why, size = IMAGENET_MEAN, IMAGENET_STD, SCRATCH, None
    set_mean, set_std = mean != AUTO, std != AUTO
    # numbers equal to the source's (a config pinned by an earlier call, or written out by hand) keep naming it
    same = lambda given, default: all(abs(float(a) - b) <= 1e-6 for a, b in zip(given, default))  # noqa: E731
    if set_mean and set_std and not (same(mean, w_mean) and same(std, w_std)):
        why = "set in the config"
    elif set_mean != set_std:
        why = f"{'data.mean' if set_mean else 'data.std'} set in the config, the other {why}"
    return Normalization(mean=tuple(float(v) for v in (mean if set_mean else w_mean)),
                         std=tuple(float(v) for v in (std if set_std else w_std)), why=why, native_size=size,
                         expected=(tuple(w_mean), tuple(w_std)) if weights is not None else None)


def pin_normalization(cfg) -> Normalization:
    """Replace `auto` in data.mean / data.std by the resolved numbers (in place), so the config a run saves, its
    checkpoints and its exports carry them; idempotent. Returns the resolution (its `why` for the header)."""
    norm = resolve_normalization(cfg)
    cfg.data.mean, cfg.data.std = list(norm.mean), list(norm.std)
    return norm


def _weights_normalization(backbone: str, pretrained) -> tuple | None:
    """(mean, std, why, native (h, w)) that pretrained weights expect, or None for a trunk from scratch."""
    if pretrained is False or (isinstance(pretrained, str) and not pretrained.strip()):
        return None
    if isinstance(pretrained, str):
        meta = read_weights_metadata(Path(pretrained).expanduser())
        if "mean" in meta and "std" in meta:
            size = meta.get("input_size")
            return meta["mean"], meta["std"], f"from the metadata of {Path(pretrained).name}", size
    cfg = _pretrained_cfg(backbone)
    if cfg is None:
        return None
    size = tuple(cfg.input_size[-2:]) if cfg.input_size else None
    return tuple(cfg.mean), tuple(cfg.std), f"timm's pretrained_cfg for {backbone}", size


def _pretrained_cfg(backbone: str):
    try:
        return timm.models.get_pretrained_cfg(backbone, allow_unregistered=False)
    except (RuntimeError, ValueError, KeyError):   # hf-hub: / local-dir: names, or no default tag
        return None


def read_weights_metadata(path: Path) -> dict:
    """`mean`, `std` (3 floats each) and `input_size` ((h, w)) from a safetensors file's metadata, where present.
    A value that does not parse is one UserError naming the file and key (the file describes itself wrongly)."""
    if path.suffix != ".safetensors" or not path.is_file():
        return {}
    try:
        with safe_open(str(path), "pt") as handle:
            raw = handle.metadata() or {}
    except Exception:   # not a safetensors file: loading the weights says so in its own words
        return {}
    out = {}
    for key, length in (("mean", 3), ("std", 3), ("input_size", None)):
        if key not in raw:
            continue
        values = _numbers(raw[key])
        if values is None or (length and len(values) != length) or (key == "std" and min(values) <= 0):
            raise UserError(f"model.pretrained: {path}: metadata {key}={raw[key]!r} is not "
                            f"{'3 numbers' if length else 'a size like [3, 224, 224]'}"
                            f"{' above 0' if key == 'std' else ''}")
        out[key] = tuple(int(v) for v in values[-2:]) if key == "input_size" else tuple(values)
    return out


def _numbers(text: str) -> list[float] | None:
    try:
        value = json.loads(text)
    except ValueError:
        value = [part for part in text.replace("(", "").replace(")", "").split(",") if part.strip()]
    if not isinstance(value, list):
        return None
    try:
        numbers = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    return numbers if numbers and all(abs(v) < 1e6 for v in numbers) else None
