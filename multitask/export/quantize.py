"""`multitask export --quantize int8`: onnxruntime static quantisation of the checked fp32 export.

    multitask export runs/quickstart/1 --format onnx --quantize int8 --calibration data/synthetic/train/images \\
        --data data/synthetic --gt data/synthetic/eval/gt.csv

QDQ format, per-channel int8 weights, uint8 activations whose ranges come from CALIBRATION_IMAGES images of
--calibration (default --data) by MinMax. The int8 model's parity with PyTorch fp32 is reported, not gated (it is
meant to differ a little); with --gt both models run through `predict` on --data and their macro F1 per head is
printed (the scoring comes from the caller: `multitask export` passes predict's). Dynamic quantisation is not
offered: it leaves convolutions slower than fp32 on CPU (BENCHMARKS.md).
"""
from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
from rich.console import Console

from ..config import Config
from ..model.net import MultiHeadNet
from ..utils.quiet import silenced
from .manifest import INPUT_NAME
from .onnx import OnnxModel, ProbabilityNet, onnx_session, require, with_metadata
from .parity import PLAIN, parity, parity_line, sample_images

CALIBRATION_IMAGES = 64
Scorer = Callable[[dict[str, bytes]], dict[str, dict]]   # {name: ONNX bytes} -> {name: scores as predict gives them}


def export_int8(net: MultiHeadNet, cfg: Config, manifest: dict, fp32: bytes, *, calibration, data,
                score: Scorer | None, result: dict, console: Console) -> bytes:
    """The int8 model with its own manifest; its parity (and with gt, both models' scores) added to `result`."""
    images, where = sample_images(calibration, cfg, CALIBRATION_IMAGES)
    method = "onnxruntime static, QDQ, per-channel int8 weights, uint8 activations (MinMax)"
    int8_manifest = {**manifest, "quantization": {"mode": "int8", "method": method, "calibration_images": len(images)}}
    int8 = with_metadata(quantize_int8(fp32, images), int8_manifest)
    onnx_model = OnnxModel(onnx_session(int8), int8_manifest, list(net.head_specs), source="the int8 export")
    result["int8_parity"] = parity(ProbabilityNet(net, cfg).eval(), onnx_model, result["parity_images"])
    console.print(f"  int8 (calibrated on {where}) vs PyTorch fp32 on the parity images: "
                  f"{parity_line(result['int8_parity'])}", **PLAIN)
    if score is not None:
        result["int8_scores"] = score_int8(fp32, int8, score=score, data=data, console=console)
    return int8


def score_int8(fp32: bytes, int8: bytes, *, score: Scorer, data, console: Console) -> dict:
    """Both models scored by `score` (predict's pipeline on --data against --gt, handed down by the caller, who sits
    above inference): {metric: (fp32, int8)}."""
    scores = score({"fp32": fp32, "int8": int8})
    keys = [k for k in scores["fp32"] if k.endswith(("/f1", "/acc")) and k in scores["int8"]]
    compared = {k: (scores["fp32"][k], scores["int8"][k]) for k in keys}
    deltas = ", ".join(f"{k[:-3]} {a:.4f} -> {b:.4f} ({b - a:+.4f})"
                       for k, (a, b) in compared.items() if k.endswith("/f1"))
    console.print(f"  int8 vs fp32 on {scores['fp32']['images']} images of {data}, macro F1: {deltas}", **PLAIN)
    return compared


def quantize_int8(model_bytes: bytes, calibration: np.ndarray) -> bytes:
    """onnxruntime static quantisation: QDQ, per-channel int8 weights, uint8 activations (MinMax on `calibration`)."""
    require("onnxruntime")   # the onnx extra: imported here, on first use, like every onnx/onnxruntime import
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{INPUT_NAME: calibration[i:i + 16]} for i in range(0, len(calibration), 16)])

        def get_next(self):
            return next(self.batches, None)

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(), silenced():
        warnings.simplefilter("ignore")
        src, pre, dst = (Path(tmp) / f"{name}.onnx" for name in ("fp32", "pre", "int8"))
        src.write_bytes(model_bytes)
        quant_pre_process(str(src), str(pre))   # shape inference + graph optimisation, as onnxruntime advises
        # the calibrator keeps every activation of every image until the end (tens of MB per image at 224; its
        # option to merge ranges as it goes drops the data in onnxruntime 1.32), hence CALIBRATION_IMAGES = 64
        quantize_static(str(pre), str(dst), Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        return dst.read_bytes()
