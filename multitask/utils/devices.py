"""Which device to run on, from a person's words: auto, cpu, cuda, cuda:N (training and prediction alike)."""
from __future__ import annotations

import torch

from .errors import UserError


def pick_device(name: str = "auto", *, local_rank: int = 0, key: str = "--device") -> torch.device:
    """`auto` = the GPU when one is visible, else the CPU. A bare `cuda` means this process's GPU (`local_rank`
    under torchrun, so each rank gets its own). `key` names the setting in errors (train.device, --device)."""
    text = str(name).strip().lower()
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(text)
    except RuntimeError:
        raise UserError(f"{key}: unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        raise UserError(f"{key} {name}: no GPU is visible; use cpu or auto")
    if device.index is None:
        device = torch.device("cuda", local_rank)
    if device.index >= torch.cuda.device_count():
        raise UserError(f"{key} {name}: only {torch.cuda.device_count()} GPU(s) are visible (cuda:0 ..)")
    return device
