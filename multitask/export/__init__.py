"""Model formats: the manifest a saved model carries, ONNX (with its onnxruntime session), safetensors and int8,
parity checks against the checkpoint, and `multitask export`.

    run_export(ckpt="runs/quickstart/1", out="exports/quickstart")
    session = onnx_session("exports/quickstart/model.onnx")
"""
from .command import run_export
from .manifest import build_manifest, read_manifest
from .onnx import OnnxModel, ProbabilityNet, load_onnx, onnx_bytes, onnx_session
from .parity import parity, synthetic_faces
from .quantize import export_int8
from .safetensors import load_safetensors, write_safetensors

__all__ = ["OnnxModel", "ProbabilityNet", "build_manifest", "export_int8", "load_onnx", "load_safetensors",
           "onnx_bytes", "onnx_session", "parity", "read_manifest", "run_export", "synthetic_faces",
           "write_safetensors"]
