"""Export a trained model for deployment: ONNX (uint8 images in, probabilities out) or safetensors + config.json.

    multitask export runs/quickstart/1 --format onnx                  # -> runs/quickstart/1/best.onnx
    multitask export runs/quickstart/1 --format onnx --quantize int8 --calibration data/synthetic/train/images \\
        --data data/synthetic --gt data/synthetic/eval/gt.csv         # -> best.int8.onnx, F1 delta vs fp32
    multitask export runs/quickstart/1 --format safetensors --out deploy/quickstart
    multitask predict --ckpt runs/quickstart/1/best.onnx deploy/quickstart --data photos/ --out out/

Both formats carry one manifest (ONNX: metadata key "multitask"; safetensors: config.json): heads and class names in
output order, the composite order and class names, the input (uint8 RGB NHWC 0..255 at the trained size: decoded
images as they come; the layout change and the normalisation run inside the model), crop settings, decision
settings, the full training config and its sha256. A consumer needs nothing else:
`onnxruntime.InferenceSession(f).get_modelmeta().custom_metadata_map["multitask"]`.

Every ONNX export is passed through onnx.checker and compared with PyTorch (fp32 eager) on a real batch before the
file is written: max |delta prob| over every output and argmax agreement per output. Above PARITY_MAX_DELTA or below
PARITY_MIN_AGREEMENT the export stops and writes nothing. `--quantize int8` (quantize.py) is onnxruntime's static
quantisation, calibrated on --calibration (default --data): its parity is reported, not gated.

Exporter: torch.onnx's TorchScript exporter by default (no onnxscript needed, an order of magnitude faster to export
than the torch.export-based one, the same outputs and runtime speed on the timm trunks tried: BENCHMARKS.md); it is
deprecated in torch, so `--exporter dynamo` (torch.export-based) is there for trunks the tracer cannot follow and
for the day the TorchScript exporter is gone.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from torch import nn

from .. import __version__
from ..config import Config, from_dict, to_dict
from ..heads import HeadSpec, composite_class_names, years_key
from ..infer.backends import SAFETENSORS_CONFIG, SAFETENSORS_WEIGHTS, OnnxModel, load_torch, onnx_session, require
from ..metrics.table import COMPOSITE, expand_derived
from ..model.net import MultiHeadNet
from ..runs.checkpoint import check_format, resolve_checkpoints
from ..utils.errors import UserError
from ..utils.io import atomic_write

METADATA_KEY = "multitask"
MANIFEST_FORMAT, MANIFEST_VERSION = "multitask-export", 1
INPUT_NAME = "images"
EXPORTERS = ("torchscript", "dynamo")
DEFAULT_OPSET = {"torchscript": 17, "dynamo": 18}
PARITY_MAX_DELTA = 1e-3        # max |delta prob| allowed between onnxruntime fp32 and PyTorch fp32
PARITY_MIN_AGREEMENT = 0.995   # share of images whose argmax must agree, per output
PARITY_IMAGES = 64
PLAIN = dict(markup=False, highlight=False, soft_wrap=True)   # console lines as written: paths and figures unwrapped


# --------------------------------------------------------------------------------------------------- manifest
def output_heads(net: MultiHeadNet, cfg: Config) -> tuple[list[HeadSpec], list[HeadSpec]]:
    """(trained heads + the components of a derived head, composite heads when all are predicted, else [])."""
    dummy = {h.name: np.full((1, h.num_classes), 1.0 / h.num_classes) for h in net.head_specs}
    heads = expand_derived(dummy, net.head_specs, cfg.heads)[0]
    composite, names = cfg.composite_heads(), {h.name for h in heads}
    return heads, composite if composite and all(h.name in names for h in composite) else []


def crop_settings(cfg: Config) -> dict | None:
    """What predict cuts from each photo before the model's resize (data/faces.py): None for the whole photo; the
    ONNX graph takes the cut image, so a runtime outside this package must apply it itself."""
    if cfg.data.crop == "none":
        return None
    from ..data.faces import detector_id

    settings = {"mode": cfg.data.crop, "margin": cfg.data.crop_margin}
    return settings | ({"detector": detector_id()} if cfg.data.crop == "face" else {})


def build_manifest(net: MultiHeadNet, cfg: Config, *, source: dict, decisions: dict | None = None,
                   batch: int | None = None) -> dict:
    config = to_dict(cfg)
    heads, composite = output_heads(net, cfg)
    height, width = cfg.data.image_size
    return {
        "format": MANIFEST_FORMAT, "version": MANIFEST_VERSION,
        "backbone": cfg.model.backbone,
        "trained_heads": [h.name for h in net.head_specs],
        "heads": {h.name: {"classes": list(h.classes), "derive": h.derive}
                  | ({"years_range": list(h.years_range), "years_output": years_key(h.name)}
                     if h.target == "years" else {}) for h in heads},
        "composite": {"heads": [h.name for h in composite], "classes": composite_class_names(composite)}
        if composite else None,
        "input": {"name": INPUT_NAME, "dtype": "uint8", "layout": "NHWC", "channels": "RGB", "range": [0, 255],
                  "batch": batch or "dynamic", "height": height, "width": width},
        "image_size": [height, width],
        "normalization": {"mean": list(cfg.data.mean), "std": list(cfg.data.std),
                          "applied": "inside the model: (x - 255 * mean) / (255 * std)"},
        "crop": crop_settings(cfg),
        # the run dir's decisions.json (decisions.py: per-head class offsets fitted on OOF), {} when it has none
        "decisions": dict(decisions or {}),
        "config": config,
        "config_sha256": hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest(),
        "source": dict(source),
        "quantization": None,
        "exported_with": {"multitask": __version__, "torch": torch.__version__.split("+")[0]},
    }


def read_manifest(raw, *, where: str) -> tuple[dict, Config]:
    """(manifest, Config) from an export manifest; UserError naming `where` when it is not one this code reads."""
    check_format(raw, fmt=MANIFEST_FORMAT, version=MANIFEST_VERSION, where=where, what="export manifest",
                 writer="write it with `multitask export`")
    cfg = from_dict(raw.get("config") or {}, where=where)
    missing = [n for n in raw.get("trained_heads") or [] if n not in cfg.heads]
    if not raw.get("trained_heads") or missing:
        raise UserError(f"{where}: trained heads {raw.get('trained_heads')} do not match its config heads "
                        f"{list(cfg.heads)}; re-export it")
    return raw, cfg


# --------------------------------------------------------------------------------------------------- ONNX
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
        from ..infer.predict import member_joint

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
    if exporter == "dynamo":
        require("onnxscript")
    wrapper = ProbabilityNet(net.float().cpu().eval(), cfg).eval()
    height, width = cfg.data.image_size
    example = torch.randint(0, 256, (batch or 2, height, width, 3), dtype=torch.uint8,
                            generator=torch.Generator().manual_seed(0))
    names = wrapper.output_names
    common = dict(input_names=[INPUT_NAME], output_names=names, opset_version=opset or DEFAULT_OPSET[exporter])
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
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
            raise UserError(f"ONNX export of {cfg.model.backbone} failed with the {exporter} exporter "
                            f"({type(err).__name__}: {_short(err)}); try --exporter {other} or another --opset"
                            ) from None
        return path.read_bytes(), names


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
        raise UserError(f"onnx.checker rejected the export: {_short(err)}; try another --opset or --exporter") from None
    return model.SerializeToString()


def parity(wrapper: ProbabilityNet, model: OnnxModel, images: np.ndarray) -> dict:
    """onnxruntime vs PyTorch fp32 on the same uint8 images: max |delta prob| and argmax agreement per output."""
    with torch.inference_mode():
        reference = [r.numpy() for r in wrapper(torch.from_numpy(images))]
    got = model.run(images, wrapper.output_names)
    delta = {n: float(np.abs(a - b).max()) for n, a, b in zip(wrapper.output_names, got, reference)}
    # argmax agreement on the class outputs only: the top two neighbouring years of a smooth year distribution may
    # differ by less than fp32 noise; the year outputs are held to the same max |delta prob|
    agree = {n: float(np.mean(a.argmax(1) == b.argmax(1))) for n, a, b in zip(wrapper.output_names, got, reference)
             if n not in wrapper.years_outputs}
    return {"images": len(images), "max_abs_delta": max(delta.values()), "min_agreement": min(agree.values()),
            "delta": delta, "agreement": agree}


# --------------------------------------------------------------------------------------------------- images
def sample_images(data, cfg: Config, count: int) -> tuple[np.ndarray, str]:
    """(count uint8 NHWC images at the model's size, where they came from): spread over --data, decoded and resized
    as predict does; synthetic faces drawn at the model's size when no --data is given."""
    height, width = cfg.data.image_size
    if data is None:
        return synthetic_faces(count, height, width), "synthetic faces"
    from ..data.images import read_image, resize
    from ..infer.predict import read_inputs

    paths = read_inputs(data, cfg.heads).frame["path"].tolist()
    picked = [paths[i] for i in sorted(set(np.linspace(0, len(paths) - 1, min(count, len(paths))).round().astype(int)))]
    images = [resize(read_image(p, at_least=(height, width)), height, width) for p in picked]   # as predict does
    return np.stack(images), f"{len(images)} images of {data}"


def synthetic_faces(count: int, height: int, width: int) -> np.ndarray:
    from ..data.synthetic import STEM_MASK, STEMS, person_identity, render

    images, index = [], 0
    while len(images) < count:
        person, rng = person_identity(0, 1, index)
        images += [render(person, STEM_MASK[s], rng, width=width, height=height) for s in STEMS]
        index += 1
    return np.ascontiguousarray(np.stack(images[:count]))


# --------------------------------------------------------------------------------------------------- files
def write_atomic(path: Path, data: bytes) -> None:
    """`atomic_write` for bytes: a kill mid-write leaves the previous file or none, never half; one clear line when
    the disk refuses."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, "wb") as f:
            f.write(data)
    except OSError as err:
        raise UserError(f"could not write {path}: {err.strerror or err}") from None


def write_safetensors(net: MultiHeadNet, manifest: dict, folder: Path) -> None:
    """FOLDER/model.safetensors, then FOLDER/config.json (last: a folder with config.json is a complete export)."""
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous().clone() for k, v in net.state_dict().items()}
    write_atomic(folder / SAFETENSORS_WEIGHTS, save(state, metadata={"format": MANIFEST_FORMAT}))
    write_atomic(folder / SAFETENSORS_CONFIG, (json.dumps({**manifest, "weights": SAFETENSORS_WEIGHTS}, indent=2)
                                               + "\n").encode())


def default_out(source: Path, fmt: str, quantize: str | None) -> Path:
    """runs/x/1/best.pt -> runs/x/1/best.onnx, best.int8.onnx or best_safetensors/; an export folder -> inside it."""
    folder, stem = (source, "model") if source.is_dir() else (source.parent, source.stem)
    if fmt == "safetensors":
        return folder / f"{stem}_safetensors"
    return folder / f"{stem}{'.int8' if quantize else ''}.onnx"


# --------------------------------------------------------------------------------------------------- command
def run_export(*, ckpt, fmt: str = "onnx", out=None, opset: int | None = None, batch: str | int = "dynamic",
               quantize: str | None = None, data=None, gt=None, calibration=None, exporter: str = "torchscript",
               console: Console | None = None) -> dict:
    """Export one checkpoint (file, run dir or safetensors folder); returns what was written and the parity."""
    console, start = console or Console(), time.perf_counter()
    fixed = _check_options(fmt=fmt, opset=opset, batch=batch, quantize=quantize, data=data, gt=gt,
                           calibration=calibration)
    source = _single_source(ckpt)
    net, cfg, extras = load_torch(source)
    manifest = build_manifest(net, cfg, source=extras["source"], decisions=extras["decisions"], batch=fixed)
    out = Path(out).expanduser() if out else default_out(source, fmt, quantize)
    console.print(f"exported {_shown(source)} ({cfg.model.backbone} {cfg.data.image_size[0]}x"
                  f"{cfg.data.image_size[1]}, heads {', '.join(manifest['trained_heads'])})", **PLAIN)
    if fmt == "safetensors":
        if out.exists() and not out.is_dir():
            raise UserError(f"--out {out}: exists and is not a folder; a safetensors export is a folder")
        write_safetensors(net, manifest, out)
        result = {"out": str(out), "format": fmt, "seconds": time.perf_counter() - start}
        console.print(f"  -> {_shown(out)}/{SAFETENSORS_WEIGHTS} ({_mb(out / SAFETENSORS_WEIGHTS)}) + "
                      f"{SAFETENSORS_CONFIG} in {result['seconds']:.1f}s", **PLAIN)
        return result
    if out.is_dir():
        out = out / default_out(source, fmt, quantize).name
    model_bytes, result = export_checked(net, cfg, manifest, opset=opset, batch=fixed, exporter=exporter, data=data,
                                         console=console)
    if quantize:
        from .quantize import export_int8

        model_bytes = export_int8(net, cfg, manifest, model_bytes, calibration=calibration or data, data=data,
                                  gt=gt, result=result, console=console)
    write_atomic(out, model_bytes)
    del result["parity_images"]
    result.update(out=str(out), format=fmt, seconds=time.perf_counter() - start)
    console.print(f"  -> {_shown(out)} ({_mb(out)}) in {result['seconds']:.1f}s", **PLAIN)
    return result


def export_checked(net: MultiHeadNet, cfg: Config, manifest: dict, *, opset, batch, exporter, data,
                   console: Console) -> tuple[bytes, dict]:
    """(fp32 ONNX bytes with the manifest, {"outputs", "parity"}) once onnx.checker and the parity gate pass."""
    model_bytes, manifest["outputs"] = onnx_bytes(net, cfg, opset=opset, batch=batch, exporter=exporter)
    manifest["exported_with"].update(opset=opset or DEFAULT_OPSET[exporter], exporter=exporter)
    model_bytes = with_metadata(model_bytes, manifest)
    height, width = cfg.data.image_size
    console.print(f"  input {INPUT_NAME}: uint8 RGB N x {height} x {width} x 3 (N {batch or 'dynamic'}; normalised "
                  f"inside), outputs {', '.join(manifest['outputs'])} (probabilities); opset "
                  f"{manifest['exported_with']['opset']}, {exporter} exporter, onnx.checker passed", **PLAIN)
    images, where = sample_images(data, cfg, PARITY_IMAGES)
    if batch:   # a fixed-batch model is checked on exactly one full batch
        images = np.resize(images, (batch, *images.shape[1:]))
    onnx_model = OnnxModel(onnx_session(model_bytes), manifest, list(net.head_specs), source="the export")
    check = parity(ProbabilityNet(net, cfg).eval(), onnx_model, images)
    console.print(f"  parity vs PyTorch fp32 on {where}: {parity_line(check)}", **PLAIN)
    if check["max_abs_delta"] > PARITY_MAX_DELTA or check["min_agreement"] < PARITY_MIN_AGREEMENT:
        worst = max(check["delta"], key=check["delta"].get)
        raise UserError(f"ONNX parity broken: max |delta prob| {check['max_abs_delta']:.2e} (output {worst}; limit "
                        f"{PARITY_MAX_DELTA:g}), argmax agreement {100 * check['min_agreement']:.2f}% (limit "
                        f"{100 * PARITY_MIN_AGREEMENT:g}%); nothing written; try another --opset or --exporter")
    return model_bytes, {"outputs": manifest["outputs"], "parity": check, "parity_images": images}


def _check_options(*, fmt, opset, batch, quantize, data, gt, calibration) -> int | None:
    """The fixed batch size (None = dynamic); UserError for options that do not go together."""
    if fmt not in ("onnx", "safetensors"):
        raise UserError(f"--format: unknown format {fmt!r}; choose onnx or safetensors")
    fixed = _batch(batch)
    if fmt == "safetensors" and (quantize or fixed or opset):
        raise UserError("--quantize, --batch and --opset apply to --format onnx only")
    if quantize not in (None, "int8"):
        raise UserError(f"--quantize: unknown mode {quantize!r}; the one mode is int8")
    if calibration is not None and not quantize:
        raise UserError("--calibration: images for int8 calibration; it needs --quantize int8")
    if quantize and calibration is None and data is None:
        raise UserError("--quantize int8 calibrates activation ranges on real images: give --data or --calibration "
                        "(a competition root, manifest CSV or image folder)")
    if gt is not None and (data is None or not quantize):
        raise UserError("--gt scores the int8 model against fp32: it needs --quantize int8 and --data")
    return fixed


def _single_source(ckpt) -> Path:
    path = Path(ckpt).expanduser()
    if path.suffix.lower() == ".onnx":
        raise UserError(f"{path} is already an ONNX model; export from its checkpoint (.pt) or run dir")
    found = resolve_checkpoints([str(path)])   # a file, a run dir's best.pt, a safetensors folder, k-fold folds
    if len(found) != 1:
        raise UserError(f"{ckpt}: {len(found)} checkpoints (a k-fold run dir); export one at a time, e.g. "
                        f"{found[0]}")
    return found[0]


def _batch(batch) -> int | None:
    if batch in (None, "dynamic"):
        return None
    try:
        value = int(batch)
    except (TypeError, ValueError):
        value = 0
    if value < 1:
        raise UserError(f"--batch: expected dynamic or a positive integer, got {batch!r}")
    return value


def parity_line(check: dict) -> str:
    worst = min(check["agreement"], key=check["agreement"].get)
    return (f"max |delta prob| {check['max_abs_delta']:.1e}, argmax agreement {100 * check['min_agreement']:.2f}% "
            f"(lowest: {worst}) on {check['images']} images")


def _shown(path: Path) -> str:
    """A path as the person would type it: relative to the working folder when inside it."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _mb(path: Path) -> str:
    return f"{path.stat().st_size / 2**20:.1f} MiB"


def _short(err: BaseException, limit: int = 200) -> str:
    text = " ".join(str(err).split()) or "no details"
    return text if len(text) <= limit else text[: limit - 3] + "..."
