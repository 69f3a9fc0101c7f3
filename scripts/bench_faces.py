"""What data.crop=face costs before training: face detection, and building the pixel cache of crops vs whole photos.

    python scripts/bench_faces.py --photos data/realfaces/train/images --limit 400 --repeats 3
    python scripts/bench_faces.py --photos data/realfaces/train/images --size 128x96 --workers 2

One process, interleaved repeats (one round of every phase per repeat, so machine drift hits them alike):
- detect:  `detect_faces` over the photos with no stored boxes (what a first `data.crop=face` run pays once);
- whole:   `ImageCache.build` of the whole photos (data.crop=none, the reduced JPEG decode);
- face:    `ImageCache.build` of the face crops from boxes already detected (a crop decodes at full size).
Each cache build goes to a fresh folder. Prints medians, ms per photo and the ratios to the whole-photo build.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))    # runnable from a fresh checkout, uninstalled

from bench_train import machine, parse_size  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", required=True, help="a folder of photos (searched recursively for .jpg / .png)")
    ap.add_argument("--limit", type=int, default=400, help="photos used (the first N in sorted order)")
    ap.add_argument("--size", type=parse_size, default=(128, 96), help="model input HxW (default 128x96)")
    ap.add_argument("--margin", type=float, default=0.4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    from multitask.data import Cropper, ImageCache, detect_faces, plan_faces

    paths = sorted(str(p) for p in Path(args.photos).rglob("*")   # hidden files (._x.jpg) are skipped as training does
                   if p.suffix.lower() in (".jpg", ".jpeg", ".png") and not p.name.startswith("."))
    paths = paths[:args.limit]
    if not paths:
        raise SystemExit(f"no photos under {args.photos}")
    height, width = args.size
    print(machine())
    print(f"{len(paths)} photos from {args.photos}, input {height}x{width}, {args.workers} worker(s)")

    plan = plan_faces(detect_faces(paths, cache_dir=None, workers=args.workers))   # warm-up; boxes for the crops
    crop = Cropper(mode="face", margin=args.margin, aspect=height / width, anchors=plan.anchors)
    print(plan.summary())

    def build(cropper):
        with tempfile.TemporaryDirectory() as folder:
            ImageCache.build(paths, height=height, width=width, cache_dir=folder, workers=args.workers,
                             crop=cropper)

    phases = {"detect": lambda: detect_faces(paths, cache_dir=None, workers=args.workers),
              "whole": lambda: build(None), "face": lambda: build(crop)}
    times = {name: [] for name in phases}
    for _ in range(args.repeats):
        for name, run in phases.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    whole = statistics.median(times["whole"])
    print(f"{'phase':<8} {'median s':>9} {'ms/photo':>9} {'vs whole-photo cache':>21}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<8} {median:9.3f} {1000 * median / len(paths):9.2f} {median / whole:20.2f}x")


if __name__ == "__main__":
    main()
