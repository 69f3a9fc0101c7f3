"""`multitask train`, `distill` and `sweep`: parse, build the config, hand it to run_training (or the study)."""
from __future__ import annotations

import argparse

from ..utils.errors import UserError
from .common import help_for, paths_and_overrides, with_choices_help


def add_train_parser(sub) -> None:
    train = with_choices_help(sub.add_parser("train", help="train a multi-head model", add_help=False, **help_for(
        "train", "Train a multi-head model. Trailing key=value pairs override the config (e.g. train.epochs=3).")))
    train.add_argument("--config", "-c", help="YAML config (see configs/)")
    train.add_argument("--heads", help="comma-separated heads to train, e.g. mask,gender,age or age")
    train.add_argument("--fold", type=int, help="validation fold (data.fold)")
    train.add_argument("--folds", help="'all' trains one sub-run per fold")
    train.add_argument("--resume", help="checkpoint (.pt) or run dir to continue")
    train.add_argument("--resume-anyway", action="store_true", help="with --resume: go on although the data (files, "
                       "people, folds or labels) changed since the checkpoint was saved")
    train.add_argument("--name", help="run name (runs/<name>/<n>)")
    train.add_argument("--debug", action="store_true", default=argparse.SUPPRESS)
    train.add_argument("overrides", nargs="*", help="key=value config overrides")


def add_distill_parser(sub) -> None:
    distill = with_choices_help(sub.add_parser(
        "distill", help="train one student on a teacher ensemble's per-head probabilities", add_help=False,
        **help_for("distill", "Train a student (an ordinary run) on a teacher ensemble's per-head probabilities "
                   "beside its labels: train.distill in the config, the teachers given here. Trailing key=value "
                   "pairs override the config.")))
    distill.add_argument("--teacher", nargs="+", required=True, help="teacher checkpoints, run dirs or k-fold dirs")
    distill.add_argument("--config", "-c", required=True, help="the student's YAML config")
    distill.add_argument("--unlabelled", nargs="+", default=[], help="folders or CSVs of photos without labels: "
                         "they learn from the teacher alone")
    distill.add_argument("--name", help="run name (runs/<name>/<n>)")
    distill.add_argument("--debug", action="store_true", default=argparse.SUPPRESS)
    distill.add_argument("overrides", nargs="*", help="key=value config overrides")


def train(args) -> int:
    from ..config import load_config  # lazy: `--help` stays instant

    overrides = list(args.overrides)
    if args.heads is not None:
        heads = [h.strip() for h in args.heads.split(",") if h.strip()]
        if not heads:
            raise UserError(f"--heads {args.heads!r}: no head named; give comma-separated heads such as "
                            f"mask,gender,age (or leave --heads out to train every head)")
        overrides.append(f"train.heads=[{','.join(heads)}]")
    if args.fold is not None:
        overrides.append(f"data.fold={args.fold}")
    if args.name:
        overrides.append(f"name={args.name}")
    if args.folds not in (None, "all"):
        raise UserError(f"--folds: expected 'all', got {args.folds!r} (use --fold K for one fold)")
    if args.resume and not args.config:
        from ..train.run import config_for_resume  # lazy: reading a checkpoint needs torch
        cfg = config_for_resume(args.resume, overrides)
    else:
        cfg = load_config(args.config, overrides)   # before torch is imported: a config typo fails in a second
    if args.resume_anyway and not args.resume:
        raise UserError("--resume-anyway: only with --resume (it lets a resume go on with changed data)")
    return run_training_(cfg, resume=args.resume, all_folds=args.folds == "all", resume_anyway=args.resume_anyway)


def run_training_(cfg, **options) -> int:
    from ..train.run import run_training  # lazy, and after the config is read

    run_training(cfg, **options)
    return 0


def distill(args) -> int:
    from ..config import SourceConfig, finalize, load_config  # lazy: `--help` stays instant

    # `--teacher a b key=value`: argparse hands the overrides after a list option to the list
    teachers, unlabelled = paths_and_overrides(args.teacher), paths_and_overrides(args.unlabelled)
    overrides = [*teachers[1], *unlabelled[1], *args.overrides, *([f"name={args.name}"] if args.name else [])]
    cfg = load_config(args.config, overrides)
    cfg.train.distill.teachers = teachers[0]   # set here, not as an override: any path stays as given
    for k, path in enumerate(unlabelled[0]):
        cfg.data.add_source(f"unlabelled{k or ''}", SourceConfig(kind="images", path=path))
    return run_training_(finalize(cfg, "multitask distill"))


def add_sweep_parser(sub) -> None:
    sw = with_choices_help(sub.add_parser(
        "sweep", help="hyper-parameter sweep (Optuna): trials as ordinary run dirs", add_help=False, **help_for(
            "sweep", "Hyper-parameter sweep on Optuna. Trailing key=value pairs override the base config for every "
            "trial.")))
    sw.add_argument("--config", "-c", required=True, help="base YAML config")
    sw.add_argument("--space", required=True, help="search space YAML (see configs/sweeps/)")
    sw.add_argument("--trials", type=int, required=True, help="the study's size: trials finished or running")
    sw.add_argument("--jobs", type=int, default=1, help="trials at once on this machine (processes)")
    sw.add_argument("--storage", help="database URL shared by several machines (default: SQLite "
                    "runs/<name>/sweep/study.db)")
    sw.add_argument("--name", help="study name and runs/<name>/sweep/ (default: the config's name)")
    sw.add_argument("--pruner", default="median", choices=["median", "halving", "hyperband", "none"])
    sw.add_argument("--seed", type=int, help="sampler seed (default: random)")
    sw.add_argument("--debug", action="store_true", default=argparse.SUPPRESS)
    sw.add_argument("overrides", nargs="*", help="key=value config overrides for every trial")


def sweep(args) -> int:
    from ..experiments.study import Sweep  # lazy: `--help` stays instant
    from ..experiments.workers import run_sweep

    run_sweep(Sweep(config=args.config, space_path=args.space, trials=args.trials, overrides=list(args.overrides),
                    name=args.name, storage=args.storage, pruner=args.pruner, jobs=args.jobs, seed=args.seed))
    return 0

