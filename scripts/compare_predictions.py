"""Per-head and composite macro F1 of several predictions.csv files on the same images, with bootstrap intervals.

    python scripts/compare_predictions.py out/a/predictions.csv out/b/predictions.csv --names a,b
    python scripts/compare_predictions.py out/*/predictions.csv --group-by gender,race,age_years

Each score gets a 95% interval from resampling groups of images (a `group` column when the table has one, else
the columns of --group-by, else single images); every file after the first also gets its paired difference to the
first. Prints a Markdown table. The tables must hold true/* columns (predict --gt writes them).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))    # runnable from a fresh checkout, uninstalled

import numpy as np  # noqa: E402

from multitask.predictions import read_table  # noqa: E402
from multitask.stats import bootstrap_interval, describe, macro_f1, paired_difference  # noqa: E402


def load(path: str) -> tuple[object, dict[str, tuple[np.ndarray, np.ndarray, int]]]:
    table, heads, probs, targets = read_table(path)
    out = {h.name: (targets[h.name], probs[h.name].argmax(1), h.num_classes) for h in heads if h.name in targets}
    if "true/composite" in table.columns:
        out["composite"] = (table["true/composite"].to_numpy(np.int64), table["pred/composite"].to_numpy(np.int64), 18)
    return table, out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("tables", nargs="+")
    p.add_argument("--names", default=None, help="comma list of row names (default: the files' parent folders)")
    p.add_argument("--group-by", default=None, help="columns that identify a person when there is no group column")
    p.add_argument("--draws", type=int, default=1000)
    args = p.parse_args()
    names = args.names.split(",") if args.names else [Path(t).parent.name for t in args.tables]
    loaded = [load(t) for t in args.tables]
    first_table = loaded[0][0]
    order = {i: k for k, i in enumerate(first_table["image_id"])}
    if "group" in first_table.columns:
        groups = first_table["group"].astype(str).to_numpy()
    elif args.group_by:
        groups = first_table[args.group_by.split(",")].astype(str).agg("|".join, axis=1).to_numpy()
    else:
        groups = np.arange(len(first_table))
    keys = [k for k in ("composite", "mask", "gender", "age") if k in loaded[0][1]]
    aligned = []
    for table, scores in loaded:
        idx = np.array([order[i] for i in table["image_id"]])
        assert len(idx) == len(order), "tables must hold the same images"
        inv = np.argsort(idx)
        aligned.append({k: (t[inv], pr[inv], n) for k, (t, pr, n) in scores.items()})
    print(f"{len(first_table)} images, {len(np.unique(groups))} groups, {args.draws} draws\n")
    print("| run | " + " | ".join(f"{k} F1 (95% CI)" for k in keys) + " |")
    print("|---|" + "---|" * len(keys))
    for name, scores in zip(names, aligned):
        cells = []
        for k in keys:
            t, pr, n = scores[k]
            stat = (lambda t, pr, n: lambda idx: macro_f1(t[idx], pr[idx], n))(t, pr, n)
            cells.append(describe(stat(np.arange(len(t))), *bootstrap_interval(stat, groups, draws=args.draws)))
        print(f"| {name} | " + " | ".join(cells) + " |")
    if len(aligned) > 1:
        print(f"\n| paired difference to {names[0]} | " + " | ".join(keys) + " |")
        print("|---|" + "---|" * len(keys))
        for name, scores in zip(names[1:], aligned[1:]):
            cells = []
            for k in keys:
                (t, a, n), (_, b, _) = aligned[0][k], scores[k]
                diff = (lambda t, a, b, n: lambda idx: macro_f1(t[idx], b[idx], n) - macro_f1(t[idx], a[idx], n))(
                    t, a, b, n)
                cells.append(describe(*paired_difference(diff, groups, draws=args.draws), signed=True))
            print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
