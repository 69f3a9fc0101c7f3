"""ONNX: the exported graph (uint8 NHWC images in, probabilities out), its bytes, and running it on onnxruntime.

    model_bytes, outputs = onnx_bytes(net, cfg)            # torch.onnx (TorchScript exporter; --exporter dynamo)
    model_bytes = with_metadata(model_bytes, manifest)     # the manifest under metadata key "multitask", checked
    model, cfg = load_onnx("best.onnx")                    # OnnxModel: probs(x) as predict wants, run(images) raw

Exporter: torch.onnx's TorchScript exporter by default (no onnxscript needed, an order of magnitude faster to export
than the torch.export-based one, the same outputs and runtime speed on the timm trunks tried: BENCHMARKS.md); it is
deprecated in torch, so `--exporter dynamo` (torch.export-based) is there for trunks the tracer cannot follow and
for the day the TorchScript exporter is gone. onnx / onnxruntime / onnxscript are the optional `onnx` extra: they are
imported where used (`require`), so the rest of the package runs without them.
"""
from __future__ import annotations

import importlib
import json
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config import Config
from ..heads import HeadSpec, expand_derived, member_joint, output_keys, years_key
from ..metrics.table import COMPOSITE
from ..model.net import MultiHeadNet
from ..utils.errors import UserError, short_error
from ..utils.io import parse_json
from ..utils.quiet import silenced
from .manifest import INPUT_NAME, METADATA_KEY, output_heads, read_manifest

EXPORTERS = ("torchscript", "dynamo")
DEFAULT_OPSET = {"torchscript": 17, "dynamo": 18}
ONNX_HINT = "pip install 'multitask[onnx]' (or: pip install onnx onnxruntime)"


class ProbabilityNet(nn.Module):
    """The exported graph: uint8 NHWC images -> one probability tensor per output, in `output_names` order.

    NHWC: what decoders hand out (a consumer passes `image[None]`), and what predict's channels_last batches are in
    memory (a permute, no copy); the model gets NCHW (channels_last) from a permute inside the graph."""

    def __init__(self, net: MultiHeadNet, cfg: Config):
        super().__init__()
        self.net = net
        self.all_heads = dict(cfg.heads)
        self.heads, self.composite = output_heads(net, cfg)
        assert COMPOSITE not in self.all_heads, f"a head cannot be named {COMPOSITE!r}: it names the joint output"
        # a years head adds its year distribution over years_range (output "age/years", (N, num_years)); the
        # expected age is sum(years x p), the years listed in the manifest's heads.<name>.years_range
        self.years_outputs = [years_key(h.name) for h in net.head_specs if h.target == "years"]
        self.output_names = ([h.name for h in self.heads] + ([COMPOSITE] if self.composite else [])
                             + self.years_outputs)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits = self.net(images.permute(0, 3, 1, 2))
        # every output is a distribution: class probabilities per head, and a years head's over its years
        probs = {name: value.float().softmax(-1) for name, value in logits.items()}
        probs = expand_derived(probs, self.net.head_specs, self.all_heads)[1]
        if self.composite:
            probs[COMPOSITE] = member_joint(probs, self.heads, self.composite)
        return tuple(probs[name] for name in self.output_names)


def onnx_bytes(net: MultiHeadNet, cfg: Config, *, opset: int | None = None, batch: int | None = None,
               exporter: str = "torchscript") -> tuple[bytes, list[str]]:
    """(serialised ONNX model, output names): uint8 NHWC input, dynamic batch unless `batch` is given."""
    if exporter not in EXPORTERS:
        raise UserError(f"--exporter: unknown exporter {exporter!r}; choose from {', '.join(EXPORTERS)}")
    check_opset(opset)
    if exporter == "dynamo":
        require("onnxscript")
    wrapper = ProbabilityNet(net.float().cpu().eval(), cfg).eval()
    height, width = cfg.data.image_size
    example = torch.randint(0, 256, (batch or 2, height, width, 3), dtype=torch.uint8,
                            generator=torch.Generator().manual_seed(0))
    names = wrapper.output_names
    common = dict(input_names=[INPUT_NAME], output_names=names, opset_version=opset or DEFAULT_OPSET[exporter])
    # silenced: on a failure the TorchScript exporter dumps the whole IR graph (hundreds of lines) from C++
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(), silenced():
        warnings.simplefilter("ignore")   # the TorchScript exporter's deprecation notice; tracer notes on timm code
        path = Path(tmp) / "model.onnx"
        try:
            if exporter == "dynamo":
                torch.onnx.export(wrapper, (example,), str(path), dynamo=True, verbose=False, external_data=False,
                                  dynamic_shapes=None if batch else ({0: torch.export.Dim("batch")},), **common)
            else:
                axes = None if batch else {n: {0: "batch"} for n in [INPUT_NAME, *names]}
                torch.onnx.export(wrapper, (example,), str(path), dynamo=False, dynamic_axes=axes, **common)
        except UserError:
            raise
        except Exception as err:
            other = EXPORTERS[1 - EXPORTERS.index(exporter)]
            low, high = opset_range()
            raise UserError(f"ONNX export of {cfg.model.backbone} failed with the {exporter} exporter at opset "
                            f"{common['opset_version']} ({short_error(err, 200, kind=True)}); try --exporter {other} "
                            f"or another --opset ({low} to {high})") from None
        return path.read_bytes(), names


def opset_range() -> tuple[int, int]:
    """The opsets torch's exporters write (torch.onnx._constants: private, so its values have a fallback); below 7
    onnxruntime has no kernels for the graph's ops."""
    try:
        constants = importlib.import_module("torch.onnx._constants")
    except ImportError:
        return 7, 20
    return max(7, getattr(constants, "ONNX_MIN_OPSET", 7)), getattr(constants, "ONNX_MAX_OPSET", 20)


def check_opset(opset: int | None) -> None:
    """A UserError line unless `opset` is None (the exporter's default) or one torch writes."""
    low, high = opset_range()
    if opset is not None and not low <= opset <= high:
        raise UserError(f"--opset: {opset} is not an opset torch {torch.__version__.split('+')[0]} exports; "
                        f"choose {low} to {high} (default {DEFAULT_OPSET['torchscript']}, dynamo "
                        f"{DEFAULT_OPSET['dynamo']})")


def with_metadata(model_bytes: bytes, manifest: dict) -> bytes:
    """The model with the manifest under metadata key "multitask", checked by onnx.checker."""
    onnx = require("onnx")
    model = onnx.load_from_string(model_bytes)
    keep = [(p.key, p.value) for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    for key, value in [*keep, (METADATA_KEY, json.dumps(manifest))]:
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.doc_string = (f"multitask export of {manifest['backbone']}: input {INPUT_NAME} uint8 RGB NHWC "
                        f"{manifest['image_size'][0]}x{manifest['image_size'][1]}; outputs "
                        f"{', '.join(manifest.get('outputs') or [])} (probabilities); metadata key {METADATA_KEY!r}")
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as err:   # onnx.checker.ValidationError, shape inference errors
        raise UserError(f"onnx.checker rejected the export: {short_error(err, 200)}; try another --opset or "
                        f"--exporter") from None
    return model.SerializeToString()


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
        raise UserError(f"{source or 'model'}: not a loadable ONNX model ({short_error(err, 200, kind=True)}); "
                        "re-export it with `multitask export --format onnx`") from None


def require(module: str):
    """Import an optional dependency, or one line that says how to install it."""
    try:   # the onnx extra is optional: imported on first use, so a plain install never needs it
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"{module} is not installed; {ONNX_HINT}") from None


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
        self.outputs = [n for n in output_keys(self.head_specs) if n in outputs]
        batch = self.input.shape[0]
        self.batch = batch if isinstance(batch, int) and batch > 0 else None
        self.check_graph()

    def check_graph(self) -> None:
        """The graph takes what its manifest says (uint8 NHWC at the manifest's size) and gives every head as many
        probabilities as the manifest has classes: checked on the declared shapes and on one zero batch, so a
        crafted file fails here in one line, not in onnxruntime or after predict wrote its outputs."""
        height, width = (int(v) for v in self.manifest["image_size"])
        want = [self.batch, height, width, 3]
        declared = list(self.input.shape)
        if (self.input.type != "tensor(uint8)" or len(declared) != 4
                or any(isinstance(d, int) and w is not None and d != w for d, w in zip(declared, want))):
            raise UserError(f"{self.source}: the ONNX graph takes {self.input.type} {declared}, but its manifest "
                            f"says uint8 NHWC [batch, {height}, {width}, 3]; re-export it with `multitask export`")
        widths = {**{h.name: h.num_classes for h in self.head_specs},
                  **{years_key(h.name): h.num_years for h in self.head_specs if h.target == "years"}}
        try:
            outs = self.run(np.zeros((self.batch or 1, height, width, 3), np.uint8), self.outputs)
        except Exception as err:   # onnxruntime's InvalidArgument, Fail, RuntimeException: the graph disagrees
            raise UserError(f"{self.source}: the ONNX graph does not run on a uint8 [batch, {height}, {width}, 3] "
                            f"batch as its manifest says ({short_error(err, 200, kind=True)}); re-export it") from None
        for name, out in zip(self.outputs, outs):
            if out.shape != (self.batch or 1, widths[name]):
                raise UserError(f"{self.source}: the ONNX graph's output {name} has shape {list(out.shape)}, but "
                                f"its manifest gives {name} {widths[name]} values per image; re-export it")

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


# ModelProto's top-level fields (onnx.proto): number -> wire type (0: varint, 2: length-delimited). ir_version (1)
# and graph (7) are in every model.
MODEL_PROTO_FIELDS = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2, 26: 2}
MAX_TOP_FIELDS = 100_000   # a real model has a dozen; a crafted file of tiny fields is not read for long


def is_onnx(path) -> bool:
    """Whether a file is an ONNX model by its content, whatever its name (`export --out model` writes no suffix):
    its top-level protobuf fields are all ModelProto's, ir_version and a graph among them, and they end exactly at
    the end of the file. A torch checkpoint fails at its first byte (a zip's 'P', a pickle's 0x80). Only tags and
    lengths are read: the graph is skipped, not parsed."""
    try:
        size = Path(path).stat().st_size
        with open(path, "rb") as f:
            seen: set[int] = set()
            for _ in range(MAX_TOP_FIELDS):
                if f.tell() >= size:
                    break
                tag = _varint(f)
                number, wire = tag >> 3, tag & 7
                if MODEL_PROTO_FIELDS.get(number) != wire:
                    return False
                value = _varint(f)   # the field's value (varint) or its length (length-delimited)
                if wire == 2:
                    f.seek(value, 1)
                seen.add(number)
            return f.tell() == size and {1, 7} <= seen
    except (OSError, ValueError):
        return False


def _varint(f) -> int:
    value = 0
    for shift in range(0, 70, 7):
        byte = f.read(1)
        if not byte:
            raise ValueError("ends inside a varint")
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value
    raise ValueError("varint longer than 10 bytes")


def load_onnx(path: Path, *, device: torch.device = torch.device("cpu")) -> tuple[OnnxModel, Config]:
    if not path.is_file():
        raise UserError(f"ONNX model not found: {path}")
    session = onnx_session(path, device=device, source=str(path))
    raw = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    if raw is None:
        raise UserError(f"{path}: an ONNX model without multitask metadata (key {METADATA_KEY!r}); predict reads "
                        "models written by `multitask export --format onnx`")
    raw = parse_json(raw, where=f"{path} (its {METADATA_KEY!r} metadata)", hint="re-export it")
    manifest, cfg = read_manifest(raw, where=str(path))
    return OnnxModel(session, manifest, [cfg.heads[n] for n in manifest["trained_heads"]], source=str(path)), cfg
