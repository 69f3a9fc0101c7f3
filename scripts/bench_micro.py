"""Micro-benchmarks of single optimisations, each as a ratio of the old way to the new way, in one process.

    python scripts/bench_micro.py                 # all three, medians of 5 rounds
    python scripts/bench_micro.py --rounds 9

  optimizer  one AdamW step over a resnet18 model's channels_last parameters: timm's create_optimizer_v2 as it comes
             (torch's CPU default, a per-parameter loop)
             vs build_optimizer (the fused kernel).
  decode     a 384x512 synthetic competition JPEG to 96x72 and to 224x224: full decode + INTER_AREA vs
             read_image(at_least=...) (decode at a DCT scale) + the same resize.
  seeding    one sample's augmentation seeding: albumentations' Compose.set_random_seed vs the one generator pair
             SeededView hands the pipeline.
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))    # runnable from a fresh checkout, uninstalled
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def per_call_ms(fn, calls: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1000


def optimizer_pair():
    from timm.optim import create_optimizer_v2

    from multitask.config import load_config
    from multitask.model import create_model
    from multitask.train import build_optimizer

    torch.manual_seed(0)
    cfg = load_config(None, ["model.backbone=resnet18"])
    model = create_model(cfg).to(memory_format=torch.channels_last)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    train = cfg.train
    # timm's factory as it comes (torch's CPU default: a per-parameter loop) against ours (fused=True)
    loop = create_optimizer_v2(model, opt="adamw", lr=train.lr, weight_decay=train.weight_decay)
    fused = build_optimizer(model, None, train)
    return ("AdamW step, resnet18", lambda: loop.step(), lambda: fused.step(), 10)


def decode_pairs(work: Path):
    from bench_train import synthetic_root

    from multitask.data import read_image, resize

    root = synthetic_root(work, 2)
    path = sorted((root / "train" / "images").rglob("*.jpg"))[0]
    pairs = []
    for size in ((96, 72), (224, 224)):
        pairs.append((f"JPEG 384x512 -> {size[0]}x{size[1]}", lambda s=size: resize(read_image(path), *s),
                      lambda s=size: resize(read_image(path, at_least=s), *s), 100))
    return pairs


def seeding_pair():
    from multitask.config import DataConfig
    from multitask.data import build_transforms

    cfg = DataConfig(image_size=[96, 72])
    cfg.augment.color_jitter = 0.5
    transform = build_transforms(cfg, train=True)
    return ("seed one sample's augmentations", lambda: transform.set_random_seed(1234),
            lambda: transform.set_random_state(np.random.default_rng(1234), random.Random(1234)), 500)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per pair; medians reported")
    parser.add_argument("--work", default=".cache/bench", help="where the synthetic photos are written")
    args = parser.parse_args(argv)
    pairs = [optimizer_pair(), *decode_pairs(Path(args.work).resolve()), seeding_pair()]
    print(f"{'what':36s} {'old ms':>9s} {'new ms':>9s} {'old/new':>8s}   (median of {args.rounds} rounds)")
    for name, old, new, calls in pairs:
        times = [(per_call_ms(old, calls), per_call_ms(new, calls)) for _ in range(args.rounds)]
        old_ms = statistics.median(t[0] for t in times)
        new_ms = statistics.median(t[1] for t in times)
        ratio = statistics.median(t[0] / t[1] for t in times)
        print(f"{name:36s} {old_ms:9.3f} {new_ms:9.3f} {ratio:8.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
