"""Model formats, which inference loads through: the manifest a saved model carries, ONNX (with its onnxruntime
session), safetensors, int8 quantisation, a PyTorch model from a checkpoint or export folder, and parity checks.
Writing them is `multitask export` (multitask.export).

    session = onnx_session("exports/quickstart/model.onnx")
    net, cfg, extras = load_torch("runs/quickstart/1/best.pt")
"""
from .load import load_torch
from .manifest import build_manifest, read_manifest
from .onnx import OnnxModel, ProbabilityNet, load_onnx, onnx_bytes, onnx_session
from .parity import parity, synthetic_faces
from .quantize import quantize_int8
from .safetensors import load_safetensors, write_safetensors

__all__ = ["OnnxModel", "ProbabilityNet", "build_manifest", "load_onnx", "load_safetensors", "load_torch",
           "onnx_bytes", "onnx_session", "parity", "quantize_int8", "read_manifest", "synthetic_faces",
           "write_safetensors"]
