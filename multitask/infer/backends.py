"""What runs one member of a `predict` ensemble: PyTorch or onnxruntime, behind one small interface.

    model, cfg = load_model("runs/quickstart/1/best.pt", device=device)      # TorchModel (a checkpoint)
    model, cfg = load_model("deploy/quickstart", device=device)              # TorchModel (a safetensors export)
    model, cfg = load_model("runs/quickstart/1/best.onnx", device=device)    # OnnxModel
    model, cfg = load_model("best.pt", backend="onnxruntime", device=device) # exported in memory, run by onnxruntime
    probs = model.probs(x, precision)   # x: float N x 3 x H x W in 0..255 on the device -> {trained head: (N, C)}
                                        # + {"age/years": (N, num_years)} year distributions of years heads

Every model carries `head_specs` (its trained heads, in output order) and `decisions` (the tuned-decisions document,
decisions.py: the run dir's decisions.json for a checkpoint, the manifest's `decisions` for an export; {} when
there is none), and comes with the Config it
was trained with, so predict treats all of them alike: views, merges, ensembles and outputs do not know which
backend ran. Nothing here unpickles: checkpoints go through `load_checkpoint` (weights_only), safetensors and ONNX
files hold no code at all.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from ..config.trust import embedded
from ..formats.load import load_torch
from ..formats.manifest import build_manifest
from ..formats.onnx import OnnxModel, is_onnx, load_onnx, onnx_bytes, onnx_session
from ..heads import HeadSpec, output_keys
from ..model.net import MultiHeadNet
from ..utils.errors import UserError

BACKENDS = ("auto", "torch", "onnxruntime")


class TorchModel:
    """A MultiHeadNet in eval mode on the device, run under the predict precision (autocast)."""
    kind = "torch"

    def __init__(self, net: MultiHeadNet, *, device: torch.device, decisions: dict | None = None):
        self.net = net.to(device=device, memory_format=torch.channels_last).eval()
        self.head_specs: list[HeadSpec] = list(net.head_specs)
        self.decisions = dict(decisions or {})
        self.outputs = output_keys(self.head_specs)

    def probs(self, x: torch.Tensor, precision) -> dict[str, torch.Tensor]:
        with precision.autocast():
            logits = self.net(x)
        return {head: value.float().softmax(-1) for head, value in logits.items()}


@contextlib.contextmanager
def glue_threads(models: list):
    """One torch thread while only onnxruntime models run (restored after).

    Then torch only does glue (uint8 to float, TTA views, rounding, merges) between onnxruntime calls; with its
    OpenMP pool beside onnxruntime's pool and the loader workers, small parallel torch ops wait on descheduled
    threads (BENCHMARKS.md: torch threads).
    """
    if any(m.kind == "torch" for m in models):
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def load_model(path, *, backend: str = "auto", device: torch.device = torch.device("cpu")):
    """(TorchModel or OnnxModel, Config) for a checkpoint file, a safetensors export folder or an .onnx file; the
    config is the file's with every path to write at its default (config/trust.py: a file never steers writes).

    backend auto: ONNX models (by suffix or by content) run on onnxruntime, the rest on PyTorch; onnxruntime: PyTorch
    sources are exported in memory first; torch: an ONNX model is an error (its graph cannot run in PyTorch).
    """
    if backend not in BACKENDS:
        raise UserError(f"--backend: unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    path = Path(path)
    if path.suffix.lower() == ".onnx" or is_onnx(path):   # by content too: an export may be named anything
        if backend == "torch":
            raise UserError(f"--backend torch: {path} is an ONNX model; run it with --backend onnxruntime (or auto)")
        model, cfg = load_onnx(path, device=device)
        return model, embedded(cfg)
    net, cfg, extras = load_torch(path)
    cfg = embedded(cfg)
    if backend == "onnxruntime":
        manifest = build_manifest(net, cfg, source=extras["source"], decisions=extras["decisions"])
        model_bytes, manifest["outputs"] = onnx_bytes(net, cfg)
        session = onnx_session(model_bytes, device=device, source=str(path))
        return OnnxModel(session, manifest, list(net.head_specs), source=f"{path} (exported in memory)"), cfg
    return TorchModel(net, device=device, decisions=extras["decisions"]), cfg
