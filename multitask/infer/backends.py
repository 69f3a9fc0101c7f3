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
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from ..analysis import tune as decisions
from ..config import Config
from ..heads import HeadSpec, years_key
from ..model.net import MultiHeadNet, create_model
from ..runs.checkpoint import load_checkpoint, model_from_checkpoint
from ..utils.errors import UserError

BACKENDS = ("auto", "torch", "onnxruntime")
SAFETENSORS_WEIGHTS, SAFETENSORS_CONFIG = "model.safetensors", "config.json"
ONNX_HINT = "pip install 'multitask[onnx]' (or: pip install onnx onnxruntime)"


class TorchModel:
    """A MultiHeadNet in eval mode on the device, run under the predict precision (autocast)."""
    kind = "torch"

    def __init__(self, net: MultiHeadNet, *, device: torch.device, decisions: dict | None = None):
        self.net = net.to(device=device, memory_format=torch.channels_last).eval()
        self.head_specs: list[HeadSpec] = list(net.head_specs)
        self.decisions = dict(decisions or {})
        self.outputs = output_names(self.head_specs)

    def probs(self, x: torch.Tensor, precision) -> dict[str, torch.Tensor]:
        with precision.autocast():
            logits = self.net(x)
        return {head: value.float().softmax(-1) for head, value in logits.items()}


class OnnxModel:
    """An exported .onnx run by onnxruntime: uint8 NHWC images in, one probability output per head.

    Views that interpolate (scale, fivecrop) or scale pixels (brightness) give fractional values; they are rounded
    to uint8 here, as any deployed consumer feeding decoded images would see them (identity, hflip and shift are
    exact). A model exported with a fixed batch (--batch N) gets its input in chunks of N, the last one padded.
    """
    kind = "onnxruntime"

    def __init__(self, session, manifest: dict, heads: list[HeadSpec], *, source: str):
        self.session, self.manifest, self.source = session, manifest, source
        self.head_specs = list(heads)
        self.decisions = dict(manifest.get("decisions") or {})
        self.input = session.get_inputs()[0]
        outputs = [o.name for o in session.get_outputs()]
        missing = [h.name for h in heads if h.name not in outputs]
        if missing:
            raise UserError(f"{source}: the ONNX model has no output for head(s) {', '.join(missing)} (outputs: "
                            f"{', '.join(outputs)}); re-export it with `multitask export`")
        self.outputs = [n for n in output_names(self.head_specs) if n in outputs]
        batch = self.input.shape[0]
        self.batch = batch if isinstance(batch, int) and batch > 0 else None

    def probs(self, x: torch.Tensor, precision=None) -> dict[str, torch.Tensor]:
        # predict's batches are channels_last, so the NHWC permute is free; views keep pixels in 0..255 (brightness
        # clamps, crops interpolate, shifts repeat pixels), so rounding is the one pass before the cast
        images = torch.round(x.permute(0, 2, 3, 1)).to(torch.uint8).cpu().contiguous().numpy()
        outs = self.run(images, self.outputs)
        return {name: torch.from_numpy(out).to(x.device) for name, out in zip(self.outputs, outs)}

    def run(self, images: np.ndarray, names: list[str] | None = None) -> list[np.ndarray]:
        """Raw session outputs (all of them, or `names`) for uint8 NHWC images of any count."""
        if self.batch is None:
            return self.session.run(names, {self.input.name: images})
        parts = []
        for start in range(0, len(images), self.batch):
            chunk = images[start:start + self.batch]
            padded = np.concatenate([chunk, np.zeros((self.batch - len(chunk), *chunk.shape[1:]), chunk.dtype)])
            parts.append([o[:len(chunk)] for o in self.session.run(names, {self.input.name: padded})])
        return [np.concatenate(outs) for outs in zip(*parts)]


def output_names(heads: list[HeadSpec]) -> list[str]:
    """What `probs` returns, in order: each head's class probabilities, then each years head's year distribution."""
    return [h.name for h in heads] + [years_key(h.name) for h in heads if h.target == "years"]


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


# --------------------------------------------------------------------------------------------------- loading
def load_model(path, *, backend: str = "auto", device: torch.device = torch.device("cpu")):
    """(TorchModel or OnnxModel, Config) for a checkpoint file, a safetensors export folder or an .onnx file.

    backend auto: .onnx files run on onnxruntime, the rest on PyTorch; onnxruntime: PyTorch sources are exported
    in memory first; torch: an .onnx file is an error (its graph cannot run in PyTorch).
    """
    if backend not in BACKENDS:
        raise UserError(f"--backend: unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        if backend == "torch":
            raise UserError(f"--backend torch: {path} is an ONNX model; run it with --backend onnxruntime (or auto)")
        return load_onnx(path, device=device)
    net, cfg, extras = load_torch(path)
    if backend == "onnxruntime":
        from ..export.onnx import build_manifest, onnx_bytes

        manifest = build_manifest(net, cfg, source=extras["source"], decisions=extras["decisions"])
        model_bytes, manifest["outputs"] = onnx_bytes(net, cfg)
        session = onnx_session(model_bytes, device=device, source=str(path))
        return OnnxModel(session, manifest, list(net.head_specs), source=f"{path} (exported in memory)"), cfg
    return TorchModel(net, device=device, decisions=extras["decisions"]), cfg


def load_torch(path) -> tuple[MultiHeadNet, Config, dict]:
    """(net in eval mode, config, {"decisions", "source"}) from a checkpoint or a safetensors export folder."""
    path = Path(path)
    if path.is_dir() and is_export_folder(path):
        return load_safetensors(path)
    ckpt = load_checkpoint(path)
    net, cfg = model_from_checkpoint(ckpt)
    source = {"checkpoint": path.name, "epoch": ckpt.get("epoch"), "step": ckpt.get("step"),
              "metric": ckpt.get("metric")}
    # tuned decisions live beside the checkpoint (decisions.json of its run dir or k-fold run dir), not inside it:
    # `multitask tune-decisions` refits them without rewriting any checkpoint
    found = decisions.find(path)
    return net, cfg, {"decisions": decisions.read(found) if found else {}, "source": source}


def is_export_folder(path: Path) -> bool:
    return (path / SAFETENSORS_WEIGHTS).is_file() or (path / SAFETENSORS_CONFIG).is_file()


def load_safetensors(folder: Path) -> tuple[MultiHeadNet, Config, dict]:
    """Rebuild the net from FOLDER/config.json (the export manifest) + FOLDER/model.safetensors; never unpickles."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from ..export.onnx import read_manifest

    config, weights = folder / SAFETENSORS_CONFIG, folder / SAFETENSORS_WEIGHTS
    for need, other in ((config, weights), (weights, config)):
        if not need.is_file():
            raise UserError(f"{folder}: {need.name} is missing (a safetensors export holds {SAFETENSORS_WEIGHTS} "
                            f"and {SAFETENSORS_CONFIG}, written by `multitask export --format safetensors`)")
    try:
        raw = json.loads(config.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{config}: not readable JSON ({err}); re-export it with `multitask export`") from None
    manifest, cfg = read_manifest(raw, where=str(config))
    heads = [cfg.heads[n] for n in manifest["trained_heads"]]
    # the weights are all here: never reach for the hub or a local pretrained file named in the config
    net = create_model(dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, pretrained=False)), heads)
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise UserError(f"{weights}: not a readable safetensors file ({err}); re-export it") from None
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        first = [line.strip() for line in str(err).strip().splitlines()]
        raise UserError(f"{weights}: the weights do not match the model {config.name} describes "
                        f"({cfg.model.backbone}, heads {manifest['trained_heads']}): "
                        f"{first[1] if len(first) > 1 else first[0]}") from None
    return net.eval(), cfg, {"decisions": dict(manifest.get("decisions") or {}),
                             "source": dict(manifest.get("source") or {})}


def load_onnx(path: Path, *, device: torch.device = torch.device("cpu")) -> tuple[OnnxModel, Config]:
    from ..export.onnx import METADATA_KEY, read_manifest

    if not path.is_file():
        raise UserError(f"ONNX model not found: {path}")
    session = onnx_session(path, device=device, source=str(path))
    raw = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    if raw is None:
        raise UserError(f"{path}: an ONNX model without multitask metadata (key {METADATA_KEY!r}); predict reads "
                        "models written by `multitask export --format onnx`")
    try:
        manifest, cfg = read_manifest(json.loads(raw), where=str(path))
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: its {METADATA_KEY!r} metadata is not JSON ({err}); re-export it") from None
    return OnnxModel(session, manifest, [cfg.heads[n] for n in manifest["trained_heads"]], source=str(path)), cfg


def onnx_session(model: bytes | str | Path, *, device: torch.device = torch.device("cpu"), source: str = "",
                 threads: int = 0):
    """An onnxruntime CPU (or CUDA) session; a file that is not a loadable ONNX model is one UserError line."""
    ort = require("onnxruntime")
    options = ort.SessionOptions()
    options.log_severity_level = 3          # errors only: the runtime's warnings are not the user's business
    options.intra_op_num_threads = threads  # 0 = one per physical core
    # no busy-waiting between ops: predict's loader workers decode on the same cores (BENCHMARKS.md: spinning)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise UserError(f"--device {device}: this onnxruntime has no CUDA provider (pip install onnxruntime-gpu); "
                            "use --device cpu")
        providers = [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
    try:
        return ort.InferenceSession(model if isinstance(model, bytes) else str(model), options, providers=providers)
    except Exception as err:  # InvalidProtobuf, Fail, InvalidGraph, NotImplemented: all mean "cannot load this"
        text = " ".join(str(err).split())
        text = text if len(text) <= 200 else text[:197] + "..."
        raise UserError(f"{source or 'model'}: not a loadable ONNX model ({type(err).__name__}: {text}); "
                        "re-export it with `multitask export --format onnx`") from None


def require(module: str):
    """Import an optional dependency, or one line that says how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"{module} is not installed; {ONNX_HINT}") from None
