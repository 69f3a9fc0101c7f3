"""A PyTorch model from either file kind that holds one: a training checkpoint or a safetensors export folder.

    net, cfg, extras = load_torch("runs/quickstart/1/best.pt")     # extras: {"decisions": doc or {}, "source": {...}}

Tuned decisions travel beside a checkpoint (decisions.json of its run dir or k-fold run dir, not inside it: `multitask
tune-decisions` refits them without rewriting any checkpoint) and inside an export's manifest.
"""
from __future__ import annotations

from pathlib import Path

from ..config import Config
from ..decisions import file as decisions
from ..model.net import MultiHeadNet
from ..runs.checkpoint import load_checkpoint, model_from_checkpoint
from ..runs.run_dir import find_decisions, is_export_folder
from .safetensors import load_safetensors


def load_torch(path) -> tuple[MultiHeadNet, Config, dict]:
    """(net in eval mode, config, {"decisions", "source"}) from a checkpoint or a safetensors export folder."""
    path = Path(path)
    if path.is_dir() and is_export_folder(path):
        return load_safetensors(path)
    ckpt = load_checkpoint(path)
    net, cfg = model_from_checkpoint(ckpt, where=str(path))
    source = {"checkpoint": path.name, "epoch": ckpt.get("epoch"), "step": ckpt.get("step"),
              "metric": ckpt.get("metric")}
    found = find_decisions(path)
    return net, cfg, {"decisions": decisions.read(found) if found else {}, "source": source}
