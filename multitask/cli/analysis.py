"""`multitask report`, `compare` and `tune-decisions`: parse, hand the options to the analysis that runs them."""
from __future__ import annotations

import argparse

from ..utils.errors import UserError
from .common import help_for


def add_report_parser(sub) -> None:
    rep = sub.add_parser("report", help="per-head error analysis -> report.html/.md/.json", **help_for("report"))
    rep.add_argument("run_dir", nargs="?", help="run dir (uses its out-of-fold / validation predictions)")
    rep.add_argument("--pred", help="predictions.csv from `multitask predict`")
    rep.add_argument("--gt", help="ground truth CSV for --pred")
    rep.add_argument("--out", help="output folder (default: <run_dir>/report or next to --pred)")
    rep.add_argument("--data", help="data root for raw ages and thumbnails when not recorded")
    rep.add_argument("--log", default="", help="also push to trackers: wandb,tensorboard")
    rep.add_argument("--cam-photos", type=int, help="class activation maps of a run dir's model: photos per head "
                     "(default 32; 0: no \"Where each head looks\" section)")
    rep.add_argument("--cache-dir", help="where face boxes are stored (default .cache/images)")
    rep.add_argument("--debug", action="store_true", default=argparse.SUPPRESS)


def report(args) -> int:
    from ..analysis.report.build import build_report  # lazy: `--help` stays instant

    if not args.run_dir and not args.pred:
        raise UserError("report: give a run dir, or --pred predictions.csv --gt gt.csv")
    build_report(run_dir=args.run_dir, pred=args.pred, gt=args.gt, out=args.out, data=args.data,
                 log=[s for s in args.log.split(",") if s], cam_photos=args.cam_photos, cache_dir=args.cache_dir)
    return 0


def add_compare_parser(sub) -> None:
    cmp = sub.add_parser("compare", help="macro F1 with bootstrap intervals; paired differences between runs",
                         **help_for("compare", "Compare runs (their oof.csv) or prediction tables on the same images: "
                                 "every macro F1 with a 95% bootstrap interval, and paired differences to the first."))
    cmp.add_argument("items", nargs="+", help="run dirs (their oof.csv) or predictions/oof CSV files")
    cmp.add_argument("--names", help="comma-separated names, one per item (default: from the paths)")
    cmp.add_argument("--out", default="compare", help="output folder (default: ./compare)")
    cmp.add_argument("--draws", type=int, default=1000, help="bootstrap draws (default 1000)")
    cmp.add_argument("--seed", type=int, default=0)
    cmp.add_argument("--group-by", help="columns that identify a person when the tables have no group column")
    cmp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS)


def compare(args) -> int:
    from ..analysis.compare import run_compare  # lazy: `--help` stays instant
    from ..metrics.stats import check_draws

    check_draws(args.draws)   # before any table is read
    run_compare(args.items, out=args.out, names=args.names.split(",") if args.names else None, draws=args.draws,
                seed=args.seed, group_by=args.group_by.split(",") if args.group_by else None)
    return 0


def add_tune_decisions_parser(sub) -> None:
    tune = sub.add_parser("tune-decisions", help="fit per-head class offsets on a run's OOF -> decisions.json",
                          **help_for("tune-decisions", "Fit per-head class offsets (added to log-probabilities before "
                                  "argmax) that maximise the composite macro F1 on the run's oof.csv, cross-fitted by "
                                  "person; kept only when the held-out gain's 95% interval is above 0. Writes "
                                  "RUN_DIR/decisions.json, which predict applies (train does this at its end)."))
    tune.add_argument("run_dir", help="run dir with oof.csv (a k-fold run dir: every fold's OOF)")
    tune.add_argument("--parts", type=int, default=2, help="cross-fitting parts (default 2)")
    tune.add_argument("--draws", type=int, default=1000, help="bootstrap draws for the held-out gain (default 1000)")
    tune.add_argument("--seed", type=int, default=0)
    tune.add_argument("--debug", action="store_true", default=argparse.SUPPRESS)


def tune_decisions(args) -> int:
    from ..decisions.fit import fit_run  # lazy: `--help` stays instant
    from ..metrics.stats import check_draws

    if args.parts < 2:
        raise UserError(f"--parts: need at least 2 cross-fitting parts, got {args.parts}")
    check_draws(args.draws)
    fit_run(args.run_dir, table=True, parts=args.parts, draws=args.draws, seed=args.seed)
    return 0
