"""`multitask predict`, `export` and `explain`: parse, hand the options to the pipeline that runs them."""
from __future__ import annotations

import argparse

from .common import help_for

EXPORT_HELP = """Export a checkpoint for deployment without this package.

ONNX: uint8 RGB NHWC images in, one probability output per head plus `composite`; heads, classes, input size, crop,
decisions and the training config in the model's metadata (key "multitask"). Checked by onnx.checker and against
PyTorch on a real batch before it is written. safetensors: model.safetensors + config.json (the same manifest)."""



def add_predict_parser(sub) -> None:
    pred = sub.add_parser("predict", help="ensemble + TTA inference -> submission.csv", **help_for("predict"))
    pred.add_argument("--ckpt", nargs="+", required=True, help="checkpoints, run dirs or k-fold parent dirs")
    pred.add_argument("--data", required=True, help="competition root / eval dir, manifest CSV, or image folder")
    pred.add_argument("--out", required=True, help="output folder")
    pred.add_argument("--tta", default="identity", help="comma-separated views: identity,hflip,shift,scale,"
                      "fivecrop,brightness")
    pred.add_argument("--merge", default="mean", choices=["mean", "gmean", "vote"])
    pred.add_argument("--weights", type=float, nargs="+", help="one weight per checkpoint")
    pred.add_argument("--joint", action="store_true", help="composite by joint argmax over head products")
    pred.add_argument("--gt", help="CSV with true classes (ImageID, ans or per-head columns; age_years binned) to "
                      "score; a labelled manifest CSV as --data is scored without it")
    pred.add_argument("--decisions", default="auto", help="auto (default): each run dir's decisions.json (tuned "
                      "class offsets); off: plain argmax; or a decisions.json for the whole ensemble")
    pred.add_argument("--batch-size", type=int, default=64)
    pred.add_argument("--workers", type=int, default=2)
    pred.add_argument("--device", default="auto")
    pred.add_argument("--amp", default="auto", choices=["auto", "fp16", "bf16", "off"])
    pred.add_argument("--backend", default="auto", choices=["auto", "torch", "onnxruntime"],
                      help="auto: .onnx files on onnxruntime, the rest on PyTorch; onnxruntime: every member (PyTorch "
                      "sources exported in memory)")
    pred.add_argument("--cache-dir", help="where face boxes are stored (face-crop checkpoints); default "
                      ".cache/images, never the folder a checkpoint names")
    pred.add_argument("--source", help="cut the photos as this training source's were (its crop and margin: "
                      "ready-made crops like realmask's are not cut again); default: each run's first source")
    pred.add_argument("--debug", action="store_true", default=argparse.SUPPRESS)


def add_export_parser(sub) -> None:
    exp = sub.add_parser("export", help="export a checkpoint to ONNX or safetensors + config.json",
                         **{**help_for("export"), "description": EXPORT_HELP})
    exp.add_argument("ckpt", help="checkpoint (.pt), run dir (its best.pt) or safetensors export folder")
    exp.add_argument("--format", default="onnx", choices=["onnx", "safetensors"])
    exp.add_argument("--out", help="output .onnx file or safetensors folder (default: next to the checkpoint, "
                     "best.pt -> best.onnx, best.int8.onnx or best_safetensors/)")
    exp.add_argument("--opset", type=int, help="ONNX opset (default 17; 18 with --exporter dynamo)")
    exp.add_argument("--batch", default="dynamic", help="dynamic (default) or a fixed batch size N")
    exp.add_argument("--quantize", choices=["int8"], help="onnxruntime static int8 quantisation, calibrated on --data")
    exp.add_argument("--data", help="images for the parity check and int8 calibration (competition root / eval dir, "
                     "manifest CSV or image folder; default: synthetic faces for parity)")
    exp.add_argument("--gt", help="with --quantize int8: score fp32 and int8 on --data against this CSV")
    exp.add_argument("--calibration", help="images for int8 calibration (default: --data); 64 are used")
    exp.add_argument("--exporter", default="torchscript", choices=["torchscript", "dynamo"],
                     help="torch.onnx exporter (default torchscript; dynamo needs onnxscript)")
    exp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS)


def predict(args) -> int:
    from ..infer.predict import PredictOptions, run_predict  # lazy: `--help` stays instant

    run_predict(PredictOptions(ckpts=args.ckpt, data=args.data, out=args.out, tta=[t for t in args.tta.split(",") if t],
                               merge=args.merge, weights=args.weights, joint=args.joint, gt=args.gt,
                               decisions=args.decisions, batch_size=args.batch_size, workers=args.workers,
                               device=args.device, amp=args.amp, backend=args.backend, cache_dir=args.cache_dir,
                               source=args.source))
    return 0


def export(args) -> int:
    from ..export import run_export  # lazy: `--help` stays instant

    run_export(ckpt=args.ckpt, fmt=args.format, out=args.out, opset=args.opset, batch=args.batch,
               quantize=args.quantize, data=args.data, calibration=args.calibration, exporter=args.exporter,
               gt=args.gt)
    return 0


def add_explain_parser(sub) -> None:
    exp = sub.add_parser("explain", help="where each head looks: class activation maps over photos as predict cuts "
                         "them -> a PNG per photo and head", **help_for("explain"))
    exp.add_argument("--ckpt", required=True, help="checkpoint (.pt), run dir or safetensors export folder")
    exp.add_argument("photos", nargs="+", help="photos or folders of photos")
    exp.add_argument("--out", required=True, help="output folder")
    exp.add_argument("--head", help="one head (default: every head)")
    exp.add_argument("--method", default="gradcam", choices=["gradcam", "gradcam++", "eigencam"],
                     help="eigencam is the trunk's first principal component: the same map for every head")
    exp.add_argument("--source", help="cut the photos as this training source's were (as predict --source)")
    exp.add_argument("--cache-dir", help="where face boxes are stored (default .cache/images)")
    exp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS)


def explain(args) -> int:
    from ..analysis.explain import run_explain  # lazy: `--help` stays instant

    run_explain(ckpt=args.ckpt, photos=args.photos, out=args.out, head=args.head, method=args.method,
                source=args.source, cache_dir=args.cache_dir)
    return 0

