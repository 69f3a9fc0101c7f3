"""`multitask export`: a trained model written as ONNX (optionally int8, scored against fp32 with predict's
pipeline) or safetensors, checked for parity before anything is written. The formats are multitask.formats'.

    run_export(ckpt="runs/quickstart/1", out="exports/quickstart")
"""
from .command import default_out, export_checked, run_export
from .int8 import export_int8

__all__ = ["default_out", "export_checked", "export_int8", "run_export"]
