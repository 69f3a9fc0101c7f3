"""Time to quality: how long each run took until its monitored validation score passed a reference run's best.

    python scripts/time_to_quality.py runs/pt_scratch/1 runs/pt_lite0/1 runs/pt_faceres/1
    python scripts/time_to_quality.py runs/pt_scratch/1 runs/pt_lite0/1 --metric val/competition/age/f1

The first run is the reference: its best value of the metric (what its best.pt scored) is the bar. For every run the
script prints, per epoch, the seconds since training started (config.yaml is written once the data is ready, so the
data preparation both runs share through the image and face caches is left out) from the wall times TensorBoard
recorded with each validation, and the first epoch whose value reaches the bar, with its time as a fraction of the
reference's whole training. Wall times include whatever else ran on the machine meanwhile: compare runs made under
the same load, or read the epochs column.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from multitask.runs import load_checkpoint


def curve(run: Path, metric: str) -> list[tuple[int, float, float]]:
    """(epoch, seconds since training started, value) per validation."""
    events = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    if metric not in events.Tags()["scalars"]:
        raise SystemExit(f"{run}: no scalar {metric} in its TensorBoard log")
    start = os.path.getmtime(run / "config.yaml")
    return [(e.step, e.wall_time - start, e.value) for e in events.Scalars(metric)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run dirs; the first is the reference")
    parser.add_argument("--metric", default=None, help="default: the reference's monitored metric")
    args = parser.parse_args()
    ref = args.runs[0]
    metric = args.metric or load_checkpoint(ref / "best.pt")["metric"]["name"]   # what best.pt was chosen by
    ref_curve = curve(ref, metric)
    bar = max(v for _, _, v in ref_curve)
    ref_total = ref_curve[-1][1]
    print(f"{metric}: the bar is {ref}'s best, {bar:.4f}; its training took {ref_total / 60:.1f} min "
          f"({len(ref_curve)} epochs)")
    for run in args.runs:
        points = curve(run, metric)
        print(f"\n{run}: " + "  ".join(f"e{e} {t / 60:.1f}min {v:.3f}" for e, t, v in points))
        passed = next(((e, t, v) for e, t, v in points if v >= bar), None)
        if passed is None:
            print(f"  never reached {bar:.4f} (best {max(v for _, _, v in points):.4f})")
        else:
            e, t, v = passed
            print(f"  reached {bar:.4f} at epoch {e} of {len(points)}: {t / 60:.1f} min, {t / ref_total:.2f} of the "
                  f"reference's training time")


if __name__ == "__main__":
    main()
