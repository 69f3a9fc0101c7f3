"""Inference photos/s of a teacher ensemble (its members x its TTA views) against its distilled student (one model,
one view), through `multitask predict`'s pipeline on the same photos, in one process.

    python scripts/bench_distill.py --teacher runs/t/1 runs/t/2 runs/t/3 --student runs/kd/1 \\
        --data data/realfaces --images 400 --tta identity,hflip --repeats 3

Each repeat runs the teacher and then the student back to back (a warm-up run of each first, so both meet loaded
weights, the face-box store and the page cache); the ratio is taken within a repeat, then the median. Photos/s
counts input photos (not forward passes), decode, crop, views, softmax and merge included, model loading excluded:
what a caller of predict waits for per photo.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import machine  # noqa: E402


def photos(data: str, count: int, folder: Path) -> Path:
    """A manifest of the first `count` photos predict would read from --data (the eval layout, a folder, a CSV)."""
    import pandas as pd

    from multitask.config import default_heads
    from multitask.data import read_inputs

    frame = read_inputs(data, default_heads()).frame.head(count)
    path = folder / "photos.csv"
    pd.DataFrame({"path": frame["path"]}).to_csv(path, index=False)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", nargs="+", required=True)
    parser.add_argument("--student", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--tta", default="identity,hflip", help="the teacher's views (the student runs identity)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    from rich.console import Console

    from multitask.infer import PredictOptions, run_predict

    quiet = Console(quiet=True)
    with tempfile.TemporaryDirectory() as tmp:
        manifest = photos(args.data, args.images, Path(tmp))

        def run(ckpts, tta) -> float:
            options = PredictOptions(ckpts=ckpts, data=manifest, out=Path(tmp) / "out", tta=tta.split(","),
                                     decisions="off", batch_size=args.batch_size, workers=args.workers)
            return run_predict(options, console=quiet)["images_per_s"]

        run(args.teacher, args.tta), run([args.student], "identity")   # warm-up
        rows = []
        for _ in range(args.repeats):
            teacher, student = run(args.teacher, args.tta), run([args.student], "identity")
            rows.append({"teacher": teacher, "student": student, "ratio": student / teacher})
            print(f"teacher {teacher:8.1f} photos/s   student {student:8.1f} photos/s   ratio {student / teacher:.2f}x",
                  flush=True)
    print(json.dumps({"machine": machine(), "teacher_models": len(args.teacher), "teacher_tta": args.tta,
                      "images": args.images, "repeats": rows,
                      "median": {k: statistics.median(r[k] for r in rows) for k in ("teacher", "student", "ratio")}},
                     indent=1))


if __name__ == "__main__":
    main()
