"""Export a trained model for deployment: ONNX (uint8 images in, probabilities out) or safetensors + config.json.

    multitask export runs/quickstart/1 --format onnx                  # -> runs/quickstart/1/best.onnx
    multitask export runs/quickstart/1 --format onnx --quantize int8 --calibration data/synthetic/train/images \\
        --data data/synthetic --gt data/synthetic/eval/gt.csv         # -> best.int8.onnx, F1 delta vs fp32
    multitask export runs/quickstart/1 --format safetensors --out deploy/quickstart
    multitask predict --ckpt runs/quickstart/1/best.onnx deploy/quickstart --data photos/ --out out/

The formats themselves live in multitask.formats, which inference loads through; this command sits above
inference so that `--gt` scores with predict's own pipeline. Both formats carry one manifest (formats/manifest.py).
Every ONNX export is passed through onnx.checker and compared with PyTorch (fp32 eager) on a real batch before the
file is written (formats/parity.py): max |delta prob| over every output and argmax agreement per output. Above
PARITY_MAX_DELTA or below PARITY_MIN_AGREEMENT the export stops and writes nothing. `--quantize int8` (int8.py) is
onnxruntime's static quantisation, calibrated on --calibration (default --data): its parity is reported, not gated.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from rich.console import Console

from ..config import Config
from ..formats.load import load_torch
from ..formats.manifest import INPUT_NAME, build_manifest
from ..formats.onnx import (
    DEFAULT_OPSET,
    OnnxModel,
    ProbabilityNet,
    check_opset,
    is_onnx,
    onnx_bytes,
    onnx_session,
    with_metadata,
)
from ..formats.parity import (
    PARITY_IMAGES,
    PARITY_MAX_DELTA,
    PARITY_MIN_AGREEMENT,
    PLAIN,
    parity,
    parity_line,
    sample_images,
)
from ..formats.safetensors import write_safetensors
from ..model.net import MultiHeadNet
from ..runs.run_dir import EXPORT_CONFIG, EXPORT_WEIGHTS, resolve_checkpoints
from ..utils.errors import UserError
from ..utils.io import write_bytes
from .int8 import export_int8


def default_out(source: Path, fmt: str, quantize: str | None) -> Path:
    """runs/x/1/best.pt -> runs/x/1/best.onnx, best.int8.onnx or best_safetensors/; an export folder -> inside it."""
    folder, stem = (source, "model") if source.is_dir() else (source.parent, source.stem)
    if fmt == "safetensors":
        return folder / f"{stem}_safetensors"
    return folder / f"{stem}{'.int8' if quantize else ''}.onnx"


# --------------------------------------------------------------------------------------------------- command
def run_export(*, ckpt, fmt: str = "onnx", out=None, opset: int | None = None, batch: str | int = "dynamic",
               quantize: str | None = None, data=None, calibration=None, exporter: str = "torchscript",
               gt=None, console: Console | None = None) -> dict:
    """Export one checkpoint (file, run dir or safetensors folder); returns what was written and the parity.
    `gt`: score the fp32 and int8 models on `data` against it (predict's pipeline; --quantize int8 only)."""
    console, start = console or Console(), time.perf_counter()
    fixed = _check_options(fmt=fmt, opset=opset, batch=batch, quantize=quantize, data=data, scored=gt is not None,
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
        console.print(f"  -> {_shown(out)}/{EXPORT_WEIGHTS} ({_mb(out / EXPORT_WEIGHTS)}) + "
                      f"{EXPORT_CONFIG} in {result['seconds']:.1f}s", **PLAIN)
        return result
    if out.is_dir():
        out = out / default_out(source, fmt, quantize).name
    model_bytes, result = export_checked(net, cfg, manifest, opset=opset, batch=fixed, exporter=exporter, data=data,
                                         console=console)
    if quantize:
        model_bytes = export_int8(net, cfg, manifest, model_bytes, calibration=calibration or data, data=data,
                                  gt=gt, result=result, console=console)
    write_bytes(out, model_bytes, what="export")
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


def _check_options(*, fmt, opset, batch, quantize, data, scored, calibration) -> int | None:
    """The fixed batch size (None = dynamic); UserError for options that do not go together."""
    if fmt not in ("onnx", "safetensors"):
        raise UserError(f"--format: unknown format {fmt!r}; choose onnx or safetensors")
    fixed = _batch(batch)
    if fmt == "safetensors" and (quantize or fixed or opset):
        raise UserError("--quantize, --batch and --opset apply to --format onnx only")
    check_opset(opset)   # before the checkpoint is read
    if quantize not in (None, "int8"):
        raise UserError(f"--quantize: unknown mode {quantize!r}; the one mode is int8")
    if calibration is not None and not quantize:
        raise UserError("--calibration: images for int8 calibration; it needs --quantize int8")
    if quantize and calibration is None and data is None:
        raise UserError("--quantize int8 calibrates activation ranges on real images: give --data or --calibration "
                        "(a competition root, manifest CSV or image folder)")
    if scored and (data is None or not quantize):
        raise UserError("--gt scores the int8 model against fp32: it needs --quantize int8 and --data")
    return fixed


def _single_source(ckpt) -> Path:
    path = Path(ckpt).expanduser()
    if path.suffix.lower() == ".onnx" or is_onnx(path):
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


def _shown(path: Path) -> str:
    """A path as the person would type it: relative to the working folder when inside it."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _mb(path: Path) -> str:
    return f"{path.stat().st_size / 2**20:.1f} MiB"
