"""ONNX export per exporter and trunk, in one process: export seconds, parity with PyTorch, onnxruntime img/s.

    python scripts/bench_export.py                                            # 5 timm trunks, 128x96, both exporters
    python scripts/bench_export.py --models resnet18 --size 224 --dynamic-int8

For each trunk (a freshly initialised multi-head model: weights do not change the figures) and each torch.onnx
exporter (torchscript, dynamo): the seconds `multitask.formats.onnx.onnx_bytes` takes, max |delta prob| against PyTorch
fp32 on 64 synthetic faces, and the onnxruntime fp32 forward img/s on one batch. --dynamic-int8 adds onnxruntime's
dynamic quantisation of the torchscript export (the mode `multitask export` does not offer) and its img/s.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
import torch  # noqa: E402
from bench_train import machine, parse_size  # noqa: E402


def ort_rate(model_bytes: bytes, images: np.ndarray, runs: int = 5) -> float:
    from multitask.formats import onnx_session

    session = onnx_session(model_bytes)
    feed = {session.get_inputs()[0].name: images}
    session.run(None, feed)
    start = time.perf_counter()
    for _ in range(runs):
        session.run(None, feed)
    return runs * len(images) / (time.perf_counter() - start)


def dynamic_int8(model_bytes: bytes) -> bytes:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        src, pre, dst = (Path(tmp) / f"{name}.onnx" for name in ("fp32", "pre", "dyn"))
        src.write_bytes(model_bytes)
        quant_pre_process(str(src), str(pre))   # as for static quantisation: shared weights become initializers
        quantize_dynamic(str(pre), str(dst), weight_type=QuantType.QInt8)
        return dst.read_bytes()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="resnet18,efficientnet_b0,mobilenetv3_small_100,convnext_atto,"
                                       "vit_tiny_patch16_224")
    p.add_argument("--size", type=parse_size, default=(128, 96), help="N or HxW (ViTs always run at 224)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--dynamic-int8", action="store_true")
    args = p.parse_args(argv)
    from multitask.config import load_config
    from multitask.formats import ProbabilityNet, onnx_bytes, onnx_session, synthetic_faces
    from multitask.model import create_model

    print(f"machine: {machine()}")
    print(f"{'model':24s} {'exporter':12s} {'export s':>8s} {'max |dprob|':>11s} {'ort img/s':>9s}", flush=True)
    for name in args.models.split(","):
        size = (224, 224) if name.startswith("vit") else args.size
        cfg = load_config(None, [f"model.backbone={name}", f"data.image_size=[{size[0]},{size[1]}]"])
        torch.manual_seed(0)
        net = create_model(cfg).eval()
        images = synthetic_faces(args.batch, *size)
        with torch.inference_mode():
            reference = [r.numpy() for r in ProbabilityNet(net, cfg)(torch.from_numpy(images))]
        for exporter in ("torchscript", "dynamo"):
            start = time.perf_counter()
            model_bytes, _ = onnx_bytes(net, cfg, exporter=exporter)
            seconds = time.perf_counter() - start
            got = onnx_session(model_bytes).run(None, {"images": images})
            delta = max(float(np.abs(a - b).max()) for a, b in zip(got, reference))
            print(f"{name:24s} {exporter:12s} {seconds:8.1f} {delta:11.1e} {ort_rate(model_bytes, images):9.1f}",
                  flush=True)
            if exporter == "torchscript" and args.dynamic_int8:
                print(f"{name:24s} {'dynamic int8':12s} {'':8s} {'':11s} "
                      f"{ort_rate(dynamic_int8(model_bytes), images):9.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
