"""Where and in what precision to run: a device from a person's words, and mixed precision as one value.

    device = pick_device("auto")                 # auto, cpu, cuda, cuda:N (training, prediction, DDP alike)
    precision = resolve_precision(cfg.train.amp, device)
    with precision.autocast():                   # no fp16/bf16 branches in the loops
        outputs = model(images)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.scaler)
"""
from __future__ import annotations

from dataclasses import dataclass

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


@dataclass
class Precision:
    device: torch.device
    dtype: torch.dtype | None

    @property
    def enabled(self) -> bool:
        return self.dtype is not None

    @property
    def scaler(self) -> bool:  # fp16 needs loss scaling; bf16 has fp32's range
        return self.dtype == torch.float16 and self.device.type == "cuda"

    @property
    def name(self) -> str:
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.dtype, "off")

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype or torch.float32, enabled=self.enabled)


def resolve_precision(amp: str, device: torch.device) -> Precision:
    if amp == "off":
        return Precision(device, None)
    if device.type == "cuda":
        if amp == "bf16" or (amp == "auto" and torch.cuda.is_bf16_supported()):
            return Precision(device, torch.bfloat16)
        return Precision(device, torch.float16)
    # CPU autocast is bf16: with AVX-512 bf16 or AMX it beats fp32 (BENCHMARKS.md); without them it would be slower
    if amp == "auto" and not cpu_has_fast_bf16():
        return Precision(device, None)
    return Precision(device, torch.bfloat16)


def cpu_has_fast_bf16() -> bool:
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
