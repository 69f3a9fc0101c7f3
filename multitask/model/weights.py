"""Weights from files: a local pretrained trunk (any common layout) and the strict load of a saved model.

    report = load_trunk_weights(trunk, "resnet18.safetensors", backbone="resnet18")   # model.pretrained: <file>
    load_strict(net, clean(state), where="best.pt", what="the model its config describes")
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from ..utils.errors import UserError, short_error

CHECKPOINT_FORMAT = "multitask-checkpoint"   # the `format` entry of a checkpoint (runs/checkpoint.py writes it)
WRAPPER_PREFIXES = ("module.", "_orig_mod.")   # DDP, torch.compile


def strip_prefixes(state: dict, prefixes=WRAPPER_PREFIXES) -> dict:
    """Drop each prefix that every key carries (DDP 'module.', torch.compile '_orig_mod.', ...), in order."""
    for prefix in prefixes:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def load_strict(net: nn.Module, state: dict, *, where: str, what: str) -> None:
    """net.load_state_dict(state) with every key and shape matching, or one UserError line: `where` (the file) and
    `what` (the model it should hold), with the first mismatch torch names."""
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        first = [line.strip() for line in str(err).strip().splitlines()]
        raise UserError(f"{where}: the weights do not match {what}: {first[1] if len(first) > 1 else first[0]}"
                        ) from None


def load_trunk_weights(trunk: nn.Module, path: str | Path, *, backbone: str = "") -> dict:
    """Load a local weights file into the trunk (classifier keys dropped, strict=False); report what did not match.

    Accepts a plain state dict (.pth/.pt/.bin via torch.load weights_only, or .safetensors), the common wrappers
    ({"state_dict": ...}, {"model": ...}, "module." prefixes) and a multitask checkpoint (its trunk weights).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"model.pretrained: weights file not found: {path}; give an existing .pth/.safetensors file, "
                        "true (timm hub) or false")
    state = _read_weights(path)
    state = _drop_classifier(trunk, state)
    own = trunk.state_dict()
    wrong = [k for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if wrong:
        k = wrong[0]
        raise UserError(f"model.pretrained: {path} does not fit backbone '{backbone}': {len(wrong)} tensors have other "
                        f"shapes (e.g. {k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}); "
                        "were the weights saved from another model?")
    result = trunk.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    unexpected = list(result.unexpected_keys)
    if len(missing) == len([k for k in own if not k.endswith("num_batches_tracked")]):
        sample = ", ".join(list(state)[:3]) or "none"
        raise UserError(f"model.pretrained: none of the {len(state)} tensors in {path} match backbone '{backbone}' "
                        f"(its first keys: {sample}); were the weights saved from another model?")
    if missing or unexpected:
        warnings.warn(f"model.pretrained: loaded {path} into '{backbone}' with {len(missing)} missing and "
                      f"{len(unexpected)} unexpected keys (missing start: {missing[:3]}, unexpected start: "
                      f"{unexpected[:3]})", stacklevel=2)
    return {"source": str(path), "missing": missing, "unexpected": unexpected}


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # not a weights file, unsafe pickle, truncated download ...
        raise UserError(f"model.pretrained: could not read weights from {path} ({short_error(err, 120, kind=True)}); "
                        "expected a state dict saved with torch.save or safetensors") from None
    return _unwrap(state, path)


def _unwrap(state, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(state, dict) and state.get("format") == CHECKPOINT_FORMAT:
        # a multitask checkpoint: its trunk (EMA when present; those are the weights that scored)
        model = state.get("ema") or state.get("model") or {}
        return {k[len("trunk."):]: v for k, v in model.items() if k.startswith("trunk.")}
    for key in ("state_dict", "model", "model_state_dict", "module"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"model.pretrained: {path} does not hold a state dict of tensors; "
                        "save one with torch.save(model.state_dict(), path)")
    return strip_prefixes(state, (*WRAPPER_PREFIXES, "trunk."))   # our own trunk's keys too


def _drop_classifier(trunk: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    names = (getattr(trunk, "pretrained_cfg", None) or {}).get("classifier") or ()
    names = (names,) if isinstance(names, str) else tuple(names)
    return {k: v for k, v in state.items() if not any(k == n or k.startswith(n + ".") for n in names)}
