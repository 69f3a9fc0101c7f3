"""`multitask export --quantize int8`: the int8 model beside the checked fp32 export, its parity, and with --gt both
models' macro F1 per head through predict's pipeline.

    multitask export runs/quickstart/1 --format onnx --quantize int8 --calibration data/synthetic/train/images \\
        --data data/synthetic --gt data/synthetic/eval/gt.csv

The int8 model's parity with PyTorch fp32 is reported, not gated (it is meant to differ a little).
"""
from __future__ import annotations

from rich.console import Console

from ..config import Config
from ..formats.onnx import OnnxModel, ProbabilityNet, onnx_session, with_metadata
from ..formats.parity import PLAIN, parity, parity_line, sample_images
from ..formats.quantize import quantize_int8
from ..infer.predict import score_models
from ..model.net import MultiHeadNet

CALIBRATION_IMAGES = 64   # the calibrator keeps every activation of every image until the end (formats/quantize.py)


def export_int8(net: MultiHeadNet, cfg: Config, manifest: dict, fp32: bytes, *, calibration, data,
                gt, result: dict, console: Console) -> bytes:
    """The int8 model with its own manifest; its parity (and with gt, both models' scores) added to `result`."""
    images, where = sample_images(calibration, cfg, CALIBRATION_IMAGES)
    method = "onnxruntime static, QDQ, per-channel int8 weights, uint8 activations (MinMax)"
    int8_manifest = {**manifest, "quantization": {"mode": "int8", "method": method, "calibration_images": len(images)}}
    int8 = with_metadata(quantize_int8(fp32, images), int8_manifest)
    onnx_model = OnnxModel(onnx_session(int8), int8_manifest, list(net.head_specs), source="the int8 export")
    result["int8_parity"] = parity(ProbabilityNet(net, cfg).eval(), onnx_model, result["parity_images"])
    console.print(f"  int8 (calibrated on {where}) vs PyTorch fp32 on the parity images: "
                  f"{parity_line(result['int8_parity'])}", **PLAIN)
    if gt is not None:
        result["int8_scores"] = score_int8(fp32, int8, data=data, gt=gt, console=console)
    return int8


def score_int8(fp32: bytes, int8: bytes, *, data, gt, console: Console) -> dict:
    """Both models scored by predict's pipeline on --data against --gt: {metric: (fp32, int8)}."""
    scores = score_models({"fp32": fp32, "int8": int8}, data=data, gt=gt)
    keys = [k for k in scores["fp32"] if k.endswith(("/f1", "/acc")) and k in scores["int8"]]
    compared = {k: (scores["fp32"][k], scores["int8"][k]) for k in keys}
    deltas = ", ".join(f"{k[:-3]} {a:.4f} -> {b:.4f} ({b - a:+.4f})"
                       for k, (a, b) in compared.items() if k.endswith("/f1"))
    console.print(f"  int8 vs fp32 on {scores['fp32']['images']} images of {data}, macro F1: {deltas}", **PLAIN)
    return compared
