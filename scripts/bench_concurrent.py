"""N trainings at once against the same N one after the other, in one run, each a `multitask train` process.

    python scripts/bench_concurrent.py                      # 2 copies, 40 synthetic people at 64x48, 2 epochs
    python scripts/bench_concurrent.py --copies 3 --epochs 3 --repeats 2
    python scripts/bench_concurrent.py --as-quickstart --people 160 --height 96 --width 72 --epochs 8   # the command

  sequential   the N trainings one after the other (wall time of all N)
  together     the N started at once, train.cpu_threads: auto (each takes its share of the cores)
  together_all the N started at once, train.cpu_threads = every core each (torch's own default, as before)

Reported: wall seconds per phase and together / sequential (target <= 1.3; 1.0 = no loss from sharing, < 1 when
fewer threads per process scale better). Each training has its own output dir and image cache (built once, before
timing, so no phase pays for decoding the photos). Run it with nothing else on the machine.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def trainings(work: Path, copies: int, args, extra: list[str]) -> list[list[str]]:
    base = [sys.executable, "-m", "multitask", "train", "--config", str(ROOT / "configs" / "quickstart.yaml"),
            f"data.root={work / 'data'}", "data.synthesize_if_missing=false", f"data.image_size=[{args.height},"
            f"{args.width}]", f"train.epochs={args.epochs}", f"data.num_workers={args.workers}",
            "tracking.progress=false"]
    if not args.as_quickstart:   # the training loop alone: no trackers, no decisions search at the end
        base += ["tracking.tensorboard=false", "tracking.wandb.mode=disabled", "train.decisions=off"]
    return [base + [f"output_dir={work / f'runs{i}'}", f"data.cache_dir={work / f'cache{i}'}"] + extra
            for i in range(copies)]


def wall(commands: list[list[str]], together: bool) -> float:
    env = {**os.environ, "MPLBACKEND": "Agg", "WANDB_SILENT": "true"}
    start = time.perf_counter()
    if together:
        procs = [subprocess.Popen(c, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for c in commands]
        for p in procs:
            _, err = p.communicate()
            if p.returncode:
                raise SystemExit(err.decode()[-2000:])
    else:
        for c in commands:
            done = subprocess.run(c, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            if done.returncode:
                raise SystemExit(done.stderr.decode()[-2000:])
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--copies", type=int, default=2)
    ap.add_argument("--people", type=int, default=40)
    ap.add_argument("--height", type=int, default=64)
    ap.add_argument("--width", type=int, default=48)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2, help="data.num_workers of each training")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--as-quickstart", action="store_true",
                    help="keep the quickstart's TensorBoard, offline wandb and decisions search (the whole command)")
    args = ap.parse_args()
    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        subprocess.run([sys.executable, "-m", "multitask", "synth", "--out", str(work / "data"), "--people",
                        str(args.people), "--size", f"{args.width}x{args.height}"], check=True,
                       stdout=subprocess.DEVNULL)
        auto = trainings(work, args.copies, args, [])
        every_core = trainings(work, args.copies, args, [f"train.cpu_threads={cores}"])
        wall(auto, together=False)   # builds every copy's image cache, untimed
        rows = []
        for _ in range(args.repeats):
            seq = wall(auto, together=False)
            row = {"sequential": seq, "together": wall(auto, together=True),
                   "together_all": wall(every_core, together=True)}
            rows.append(row)
            print(json.dumps({k: round(v, 1) for k, v in row.items()}), flush=True)
    ratio = statistics.median(r["together"] / r["sequential"] for r in rows)
    ratio_all = statistics.median(r["together_all"] / r["sequential"] for r in rows)
    print(f"{args.copies} trainings on {cores} cores ({args.people} people, {args.height}x{args.width}, "
          f"{args.epochs} epochs, {args.workers} loader workers each), median of {args.repeats}: "
          f"together / sequential = {ratio:.2f} with cpu_threads auto, {ratio_all:.2f} with every core each")


if __name__ == "__main__":
    main()
