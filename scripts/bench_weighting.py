"""Step time of each multi-task weighting, through the engine's own step (Trainer.train_batch + optimizer_step).

    python scripts/bench_weighting.py                                  # resnet18, 128x96, batch 32, 3 heads
    python scripts/bench_weighting.py --size 224 --steps 10 --repeats 5 --methods static,pcgrad
    python scripts/bench_weighting.py --amp off --accum 2

One fixed random uint8 batch, no data loading, the quickstart's heads and losses. The methods run interleaved (one
round of every method per repeat) so machine drift hits them alike; prints each method's median ms per optimizer
step and its ratio to static. Gradient-level methods (PCGrad, CAGrad) pay one backward through the trunk per head.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))    # runnable from a fresh checkout, uninstalled

import torch  # noqa: E402
from bench_train import machine, parse_size  # noqa: E402


def make_trainer(method: str, args):
    from multitask.config import load_config
    from multitask.train import EpochLosses, Trainer, TrainState
    from multitask.utils import DistInfo, resolve_precision

    height, width = args.size
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml", [
        f"train.loss_weighting={method}", f"data.image_size=[{height},{width}]", f"train.batch_size={args.batch}",
        f"train.amp={args.amp}", f"train.accum_steps={args.accum}", f"model.backbone={args.model}"])
    torch.manual_seed(0)
    precision = resolve_precision(cfg.train.amp, torch.device("cpu"))
    heads = cfg.trained_heads()
    state = TrainState.create(cfg, precision=precision, class_counts={h.name: [1] * h.num_classes for h in heads},
                              steps_per_epoch=1000, seed=0)
    trainer = Trainer(cfg=cfg, run_dir=Path("."), info=DistInfo(), precision=precision, tracker=None)
    trainer.attach(state)
    trainer.net.train()
    images = torch.randint(0, 256, (args.batch, 3, height, width), dtype=torch.uint8)
    targets = {h.name: torch.randint(0, h.num_classes, (args.batch,)) for h in heads}
    losses = EpochLosses(heads, torch.device("cpu"), step=0)

    def step():
        for micro in range(args.accum):
            trainer.train_batch(images, targets, losses, sync=micro == args.accum - 1)
        trainer.optimizer_step(batches_done=0)
    return step


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default="static,uncertainty,dwa,pcgrad,cagrad")
    p.add_argument("--model", default="resnet18")
    p.add_argument("--size", type=parse_size, default=(128, 96), help="N or HxW (default 128x96)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--accum", type=int, default=1, help="micro-batches per optimizer step")
    p.add_argument("--amp", default="auto", choices=["auto", "bf16", "off"])
    p.add_argument("--steps", type=int, default=5, help="timed optimizer steps per method per repeat")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    methods = args.methods.split(",")
    steps = {m: make_trainer(m, args) for m in methods}
    for step in steps.values():   # warm-up: first-call allocations, oneDNN primitive caches
        step()
    times: dict[str, list[float]] = {m: [] for m in methods}
    for _ in range(args.repeats):
        for m in methods:
            start = time.perf_counter()
            for _ in range(args.steps):
                steps[m]()
            times[m].append((time.perf_counter() - start) / args.steps * 1000)
    print(f"machine: {machine()}")
    print(f"{args.model} {args.size[0]}x{args.size[1]}, batch {args.batch} x {args.accum} micro-batches, amp "
          f"{args.amp}, median of {args.repeats} x {args.steps} steps")
    base = statistics.median(times[methods[0]])
    for m in methods:
        med = statistics.median(times[m])
        print(f"  {m:12s} {med:8.1f} ms/step   x{med / base:.2f} vs {methods[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
