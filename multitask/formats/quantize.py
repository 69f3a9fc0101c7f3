"""onnxruntime static int8 quantisation of a checked fp32 ONNX model (`multitask export --quantize int8`).

QDQ format, per-channel int8 weights, uint8 activations whose ranges come from the calibration images by MinMax.
Dynamic quantisation is not offered: it leaves convolutions slower than fp32 on CPU (BENCHMARKS.md).
"""
from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np

from ..utils.quiet import silenced
from .manifest import INPUT_NAME
from .onnx import require


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
        # option to merge ranges as it goes drops the data in onnxruntime 1.32), hence 64 images at most
        quantize_static(str(pre), str(dst), Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        return dst.read_bytes()
