#!/usr/bin/env bash
# GPU throughput in one short command (< 5 minutes on one GPU):
#   1. model-only training and inference img/s for efficientnet_b0 and resnet50 at 384x512 (the photos' own size,
#      no resize), fp16 and bf16 autocast, channels_last; with --compile also torch.compile (adds compile time);
#   2. the real multitask train path (scripts/bench_train.py: cache, loader, AMP, metrics, tracking) against its
#      model-only ceiling for efficientnet_b0, to see whether the data path keeps up with the GPU.
#
#   bash scripts/bench_gpu.sh                # on a GPU machine; writes $OUT/bench_gpu.txt when OUT is set
#   bash scripts/bench_gpu.sh --compile      # also torch.compile'd rows
#   bash scripts/bench_gpu.sh --dry-run      # CPU smoke test of the same code at a tiny size (seconds)
#
# Environment: PYTHON (default .venv/bin/python, else python), WORKERS (loader workers, default 8), OUT.
set -euo pipefail
cd "$(dirname "$0")/.."

DRY=0
COMPILE=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    --compile) COMPILE=1 ;;
    *) echo "error: unknown option $arg; use --dry-run and/or --compile" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python
LOG=/dev/null
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  LOG="$OUT/bench_gpu.txt"
fi
export NO_ALBUMENTATIONS_UPDATE=1 WANDB_SILENT=true DRY COMPILE

{
echo "# bench_gpu $(date -u +%Y-%m-%dT%H:%M:%SZ) dry_run=$DRY compile=$COMPILE"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"

"$PY" - <<'PYEOF'
"""Model-only matrix: {model} x {fp16, bf16} (+ compile) -> train and inference img/s."""
import os
import sys
import time

import torch

sys.path[:0] = [os.getcwd(), os.path.join(os.getcwd(), "scripts")]
from bench_train import model_steps, sync  # noqa: E402  (the same model-only steps as bench_train's ceiling)
from multitask.config import load_config  # noqa: E402
from multitask.utils import UserError, pick_device  # noqa: E402

dry, compile_too = os.environ["DRY"] == "1", os.environ["COMPILE"] == "1"
try:
    device = pick_device("cpu" if dry else "cuda")
except UserError:
    sys.exit("error: no GPU visible; run with --dry-run for the CPU smoke test")
height, width = (64, 48) if dry else (512, 384)
batches = {"efficientnet_b0": 4 if dry else 64, "resnet50": 4 if dry else 64}
warmup, steps = (1, 2) if dry else (5, 20)
torch.backends.cudnn.benchmark = True
print(f"{'model':16s} {'amp':5s} {'compile':7s} {'batch':>5s} {'train img/s':>12s} {'infer img/s':>12s}  "
      f"{height}x{width}, channels_last, {device}, torch {torch.__version__}", flush=True)


def timed(fn, n):
    for _ in range(warmup):
        fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(n):
        fn()
    sync(device)
    return time.perf_counter() - start


for name, batch in batches.items():
    for amp in ("fp16", "bf16"):
        for use_compile in ([False, True] if compile_too else [False]):
            if use_compile and amp == "fp16":
                continue   # one compiled row per model keeps the script inside its time budget
            cfg = load_config(None, [f"model.backbone={name}", f"data.image_size=[{height},{width}]",
                                     f"train.amp={amp}", f"train.batch_size={batch}", "train.channels_last=true"])
            train_step, infer_step = model_steps(cfg, device, compile_model=use_compile)
            train = steps * batch / timed(train_step, steps)
            infer = steps * batch / timed(infer_step, steps)
            print(f"{name:16s} {amp:5s} {str(use_compile):7s} {batch:5d} {train:12.1f} {infer:12.1f}", flush=True)
            del train_step, infer_step
            if device.type == "cuda":
                torch.cuda.empty_cache()
PYEOF

echo
echo "# real train path vs its ceiling (scripts/bench_train.py)"
if [ "$DRY" = 1 ]; then
  "$PY" scripts/bench_train.py --device cpu --model efficientnet_b0 --size 64x48 --batch 8 --images 32 --epochs 2 \
      --workers 0 --phases ceiling,multitask --set tracking.progress=false 2>&1 | grep -v "^ \|─\|^epoch\|^train/"
else
  "$PY" scripts/bench_train.py --device cuda --model efficientnet_b0 --size 512x384 --batch 64 --images 1024 \
      --epochs 2 --workers "${WORKERS:-8}" --phases ceiling,multitask --set tracking.progress=false 2>&1 \
      | grep -v "^ \|─\|^epoch\|^train/"
fi
} 2>&1 | tee "$LOG"
