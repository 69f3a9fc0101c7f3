"""Command line: `multitask {train,distill,predict,export,report,explain,synth,sweep,compare,tune-decisions,config}`.

    multitask synth --out data/synthetic --people 60 --size 96x128
    multitask train --config configs/quickstart.yaml --heads mask,gender,age train.epochs=3
    multitask distill --teacher runs/kfold/1 --config configs/quickstart.yaml name=student
    multitask predict --ckpt runs/quickstart/1 --data data/synthetic --out out/ --tta identity,hflip \\
        --gt data/synthetic/eval/gt.csv
    multitask export runs/quickstart/1 --format onnx
    multitask report runs/quickstart/1
    multitask explain --ckpt runs/quickstart/1 photo.jpg --out out/explain
    multitask config show --config configs/quickstart.yaml train.epochs=3
    multitask sweep --config configs/quickstart.yaml --space configs/sweeps/optimizer.yaml --trials 20
    multitask compare runs/quickstart/1 runs/quickstart_single18/1
    multitask tune-decisions runs/quickstart/1

Bad input (and a full or unwritable disk) ends with one line on stderr and exit code 2; any other failure with
one line and exit code 1. `--debug` (or MULTITASK_DEBUG=1) shows the traceback instead.
Each command imports what it runs (torch, timm, ...) inside its function, so `--help` is instant; these are the
package's only function-local imports of itself.
"""
from __future__ import annotations

import argparse
import functools
import os
import re
import sys
import textwrap

from .cli_examples import EXAMPLES
from .utils.errors import UserError, one_line
from .utils.signals import TERMINATED_EXIT, Terminated, sigterm_as_interrupt

EXPORT_HELP = """Export a checkpoint for deployment without this package.

ONNX: uint8 RGB NHWC images in, one probability output per head plus `composite`; heads, classes, input size, crop,
decisions and the training config in the model's metadata (key "multitask"). Checked by onnx.checker and against
PyTorch on a real batch before it is written. safetensors: model.safetensors + config.json (the same manifest)."""


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH like 96x128, got {text!r}") from None
    if w < 8 or h < 8:
        raise argparse.ArgumentTypeError(f"size must be at least 8x8, got {text!r}")
    return w, h


def _help(command: str, description: str | None = None) -> dict:
    """argparse keyword arguments that end a command's --help with its examples, line breaks kept (the raw
    formatter does not wrap the description either, so it is wrapped here)."""
    text = {"description": textwrap.fill(description, 100)} if description else {}
    return {**text, "epilog": "examples:" + EXAMPLES[command], "formatter_class": argparse.RawDescriptionHelpFormatter}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="multitask", **_help("multitask", __doc__.split("\n\n")[0]))
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a multi-head model", **_help("train", "Train a multi-head model. "
                           "Trailing key=value pairs override the config (e.g. train.epochs=3)."))
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

    distill = sub.add_parser("distill", help="train one student on a teacher ensemble's per-head probabilities",
                             **_help("distill", "Train a student (an ordinary run) on a teacher ensemble's per-head "
                                     "probabilities beside its labels: train.distill in the config, the teachers "
                                     "given here. Trailing key=value pairs override the config."))
    distill.add_argument("--teacher", nargs="+", required=True, help="teacher checkpoints, run dirs or k-fold dirs")
    distill.add_argument("--config", "-c", required=True, help="the student's YAML config")
    distill.add_argument("--unlabelled", nargs="+", default=[], help="folders or CSVs of photos without labels: "
                         "they learn from the teacher alone")
    distill.add_argument("--name", help="run name (runs/<name>/<n>)")
    distill.add_argument("--debug", action="store_true", default=argparse.SUPPRESS)
    distill.add_argument("overrides", nargs="*", help="key=value config overrides")

    pred = sub.add_parser("predict", help="ensemble + TTA inference -> submission.csv", **_help("predict"))
    pred.add_argument("--ckpt", nargs="+", required=True, help="checkpoints, run dirs or k-fold parent dirs")
    pred.add_argument("--data", required=True, help="competition root / eval dir, manifest CSV, or image folder")
    pred.add_argument("--out", required=True, help="output folder")
    pred.add_argument("--tta", default="identity", help="comma-separated views: identity,hflip,shift,scale,"
                      "fivecrop,brightness")
    pred.add_argument("--merge", default="mean", choices=["mean", "gmean", "vote"])
    pred.add_argument("--weights", type=float, nargs="+", help="one weight per checkpoint")
    pred.add_argument("--joint", action="store_true", help="composite by joint argmax over head products")
    pred.add_argument("--gt", help="CSV with true classes (ImageID, ans or per-head columns; age_years binned) to "
                      "score; a labelled manifest CSV as --data is scored without it")
    pred.add_argument("--decisions", default="auto", help="auto (default): each run dir's decisions.json (tuned "
                      "class offsets); off: plain argmax; or a decisions.json for the whole ensemble")
    pred.add_argument("--batch-size", type=int, default=64)
    pred.add_argument("--workers", type=int, default=2)
    pred.add_argument("--device", default="auto")
    pred.add_argument("--amp", default="auto", choices=["auto", "fp16", "bf16", "off"])
    pred.add_argument("--backend", default="auto", choices=["auto", "torch", "onnxruntime"],
                      help="auto: .onnx files on onnxruntime, the rest on PyTorch; onnxruntime: every member (PyTorch "
                      "sources exported in memory)")
    pred.add_argument("--cache-dir", help="where face boxes are stored (face-crop checkpoints); default "
                      ".cache/images, never the folder a checkpoint names")
    pred.add_argument("--source", help="cut the photos as this training source's were (its crop and margin: "
                      "ready-made crops like realmask's are not cut again); default: each run's first source")
    pred.add_argument("--debug", action="store_true", default=argparse.SUPPRESS)

    exp = sub.add_parser("export", help="export a checkpoint to ONNX or safetensors + config.json",
                         **{**_help("export"), "description": EXPORT_HELP})
    exp.add_argument("ckpt", help="checkpoint (.pt), run dir (its best.pt) or safetensors export folder")
    exp.add_argument("--format", default="onnx", choices=["onnx", "safetensors"])
    exp.add_argument("--out", help="output .onnx file or safetensors folder (default: next to the checkpoint, "
                     "best.pt -> best.onnx, best.int8.onnx or best_safetensors/)")
    exp.add_argument("--opset", type=int, help="ONNX opset (default 17; 18 with --exporter dynamo)")
    exp.add_argument("--batch", default="dynamic", help="dynamic (default) or a fixed batch size N")
    exp.add_argument("--quantize", choices=["int8"], help="onnxruntime static int8 quantisation, calibrated on --data")
    exp.add_argument("--data", help="images for the parity check and int8 calibration (competition root / eval dir, "
                     "manifest CSV or image folder; default: synthetic faces for parity)")
    exp.add_argument("--gt", help="with --quantize int8: score fp32 and int8 on --data against this CSV")
    exp.add_argument("--calibration", help="images for int8 calibration (default: --data); 64 are used")
    exp.add_argument("--exporter", default="torchscript", choices=["torchscript", "dynamo"],
                     help="torch.onnx exporter (default torchscript; dynamo needs onnxscript)")
    exp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS)

    rep = sub.add_parser("report", help="per-head error analysis -> report.html/.md/.json", **_help("report"))
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
    add_explain_parser(sub)

    syn = sub.add_parser("synth", help="write a synthetic data set in the competition layout", **_help("synth"))
    syn.add_argument("--out", required=True)
    syn.add_argument("--people", type=int, default=60)
    syn.add_argument("--size", type=_size, default=(96, 128), help="WxH (default 96x128)")
    syn.add_argument("--seed", type=int, default=0)
    syn.add_argument("--eval-people", type=int, default=None,
                     help="people in the eval set (default: a quarter of --people, at least 2)")
    syn.add_argument("--debug", action="store_true", default=argparse.SUPPRESS)

    config = sub.add_parser("config", help="inspect configs", **_help("config"))
    config_sub = config.add_subparsers(dest="config_command", required=True)
    show = config_sub.add_parser("show", help="print the fully resolved config as YAML", **_help(
        "config show", "Print the resolved config (the file, then the overrides) as YAML: every key with its value, "
        "and the default as a trailing comment where the value differs from it. The output loads back as the same "
        "config: `multitask train --config` it."))
    show.add_argument("--config", "-c", help="YAML config (default: the built-in defaults)")
    show.add_argument("overrides", nargs="*", help="key=value config overrides")
    show.add_argument("--debug", action="store_true", default=argparse.SUPPRESS)
    add_sweep_parser(sub)
    add_compare_parser(sub)
    add_tune_decisions_parser(sub)
    return parser


def _train(args) -> int:
    from .config import load_config  # lazy: `--help` stays instant

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
        from .train.run import config_for_resume  # lazy: reading a checkpoint needs torch
        cfg = config_for_resume(args.resume, overrides)
    else:
        cfg = load_config(args.config, overrides)   # before torch is imported: a config typo fails in a second
    if args.resume_anyway and not args.resume:
        raise UserError("--resume-anyway: only with --resume (it lets a resume go on with changed data)")
    return _run_training(cfg, resume=args.resume, all_folds=args.folds == "all", resume_anyway=args.resume_anyway)


def _run_training(cfg, **options) -> int:
    from .analysis.tune import after_training  # lazy, and after the config is read
    from .infer.teacher import teacher_for
    from .train.run import run_training
    run_training(cfg, after=after_training, teacher=teacher_for(cfg), **options)
    return 0


def _paths_and_overrides(values: list[str]) -> tuple[list[str], list[str]]:
    """(paths, key=value overrides) of a list option's values: `a.b=value` that is not an existing file."""
    is_override = lambda v: bool(re.match(r"[A-Za-z_][\w.\[\]]*=", v)) and not os.path.exists(v)  # noqa: E731
    return [v for v in values if not is_override(v)], [v for v in values if is_override(v)]


def _distill(args) -> int:
    from .config import SourceConfig, finalize, load_config  # lazy: `--help` stays instant

    # `--teacher a b key=value`: argparse hands the overrides after a list option to the list
    teachers, unlabelled = _paths_and_overrides(args.teacher), _paths_and_overrides(args.unlabelled)
    overrides = [*teachers[1], *unlabelled[1], *args.overrides, *([f"name={args.name}"] if args.name else [])]
    cfg = load_config(args.config, overrides)
    cfg.train.distill.teachers = teachers[0]   # set here, not as an override: any path stays as given
    for k, path in enumerate(unlabelled[0]):
        cfg.data.add_source(f"unlabelled{k or ''}", SourceConfig(kind="images", path=path))
    return _run_training(finalize(cfg, "multitask distill"))


def _predict(args) -> int:
    from .infer.predict import PredictOptions, run_predict  # lazy: `--help` stays instant

    run_predict(PredictOptions(ckpts=args.ckpt, data=args.data, out=args.out, tta=[t for t in args.tta.split(",") if t],
                               merge=args.merge, weights=args.weights, joint=args.joint, gt=args.gt,
                               decisions=args.decisions, batch_size=args.batch_size, workers=args.workers,
                               device=args.device, amp=args.amp, backend=args.backend, cache_dir=args.cache_dir,
                               source=args.source))
    return 0


def _export(args) -> int:
    from .export.command import run_export  # lazy: `--help` stays instant
    from .infer.predict import score_models

    # the int8 model is scored by predict's pipeline, which sits above export: handed down from here
    score = functools.partial(score_models, data=args.data, gt=args.gt) if args.gt else None
    run_export(ckpt=args.ckpt, fmt=args.format, out=args.out, opset=args.opset, batch=args.batch,
               quantize=args.quantize, data=args.data, calibration=args.calibration, exporter=args.exporter,
               score=score)
    return 0


def _report(args) -> int:
    from .analysis.report.build import build_report  # lazy: `--help` stays instant

    if not args.run_dir and not args.pred:
        raise UserError("report: give a run dir, or --pred predictions.csv --gt gt.csv")
    build_report(run_dir=args.run_dir, pred=args.pred, gt=args.gt, out=args.out, data=args.data,
                 log=[s for s in args.log.split(",") if s], cam_photos=args.cam_photos, cache_dir=args.cache_dir)
    return 0


def add_explain_parser(sub) -> None:
    exp = sub.add_parser("explain", help="where each head looks: class activation maps over photos as predict cuts "
                         "them -> a PNG per photo and head", **_help("explain"))
    exp.add_argument("--ckpt", required=True, help="checkpoint (.pt), run dir or safetensors export folder")
    exp.add_argument("photos", nargs="+", help="photos or folders of photos")
    exp.add_argument("--out", required=True, help="output folder")
    exp.add_argument("--head", help="one head (default: every head)")
    exp.add_argument("--method", default="gradcam", choices=["gradcam", "gradcam++", "eigencam"],
                     help="eigencam is the trunk's first principal component: the same map for every head")
    exp.add_argument("--source", help="cut the photos as this training source's were (as predict --source)")
    exp.add_argument("--cache-dir", help="where face boxes are stored (default .cache/images)")
    exp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS)


def _explain(args) -> int:
    from .analysis.explain import run_explain  # lazy: `--help` stays instant

    run_explain(ckpt=args.ckpt, photos=args.photos, out=args.out, head=args.head, method=args.method,
                source=args.source, cache_dir=args.cache_dir)
    return 0


def _config(args) -> int:
    from .config import load_config  # lazy: `--help` stays instant
    from .config.show import show_config

    cfg = load_config(args.config, list(args.overrides))
    source = " ".join([args.config or "built-in defaults", *args.overrides])
    sys.stdout.write(show_config(cfg, source=source))
    return 0


def _synth(args) -> int:
    from rich.console import Console  # lazy: `--help` stays instant

    from .data.synthetic import write_synthetic

    summary = write_synthetic(args.out, people=args.people, width=args.size[0], height=args.size[1], seed=args.seed,
                              eval_people=args.eval_people)
    Console().print(f"[green]wrote[/] {summary['images']} images of {summary['people']} people and "
                    f"{summary['eval_images']} eval images to {args.out}")
    return 0


def add_sweep_parser(sub) -> None:
    sw = sub.add_parser("sweep", help="hyper-parameter sweep (Optuna): trials as ordinary run dirs", **_help(
        "sweep", "Hyper-parameter sweep on Optuna. Trailing key=value pairs override the base config for every "
        "trial."))
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


def _sweep(args) -> int:
    from .experiments.study import Sweep  # lazy: `--help` stays instant
    from .experiments.workers import run_sweep

    run_sweep(Sweep(config=args.config, space_path=args.space, trials=args.trials, overrides=list(args.overrides),
                    name=args.name, storage=args.storage, pruner=args.pruner, jobs=args.jobs, seed=args.seed))
    return 0


def add_compare_parser(sub) -> None:
    cmp = sub.add_parser("compare", help="macro F1 with bootstrap intervals; paired differences between runs",
                         **_help("compare", "Compare runs (their oof.csv) or prediction tables on the same images: "
                                 "every macro F1 with a 95% bootstrap interval, and paired differences to the first."))
    cmp.add_argument("items", nargs="+", help="run dirs (their oof.csv) or predictions/oof CSV files")
    cmp.add_argument("--names", help="comma-separated names, one per item (default: from the paths)")
    cmp.add_argument("--out", default="compare", help="output folder (default: ./compare)")
    cmp.add_argument("--draws", type=int, default=1000, help="bootstrap draws (default 1000)")
    cmp.add_argument("--seed", type=int, default=0)
    cmp.add_argument("--group-by", help="columns that identify a person when the tables have no group column")
    cmp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS)


def _compare(args) -> int:
    from .analysis.compare import run_compare  # lazy: `--help` stays instant
    from .metrics.stats import check_draws

    check_draws(args.draws)   # before any table is read
    run_compare(args.items, out=args.out, names=args.names.split(",") if args.names else None, draws=args.draws,
                seed=args.seed, group_by=args.group_by.split(",") if args.group_by else None)
    return 0


def add_tune_decisions_parser(sub) -> None:
    tune = sub.add_parser("tune-decisions", help="fit per-head class offsets on a run's OOF -> decisions.json",
                          **_help("tune-decisions", "Fit per-head class offsets (added to log-probabilities before "
                                  "argmax) that maximise the composite macro F1 on the run's oof.csv, cross-fitted by "
                                  "person; kept only when the held-out gain's 95% interval is above 0. Writes "
                                  "RUN_DIR/decisions.json, which predict applies (train does this at its end)."))
    tune.add_argument("run_dir", help="run dir with oof.csv (a k-fold run dir: every fold's OOF)")
    tune.add_argument("--parts", type=int, default=2, help="cross-fitting parts (default 2)")
    tune.add_argument("--draws", type=int, default=1000, help="bootstrap draws for the held-out gain (default 1000)")
    tune.add_argument("--seed", type=int, default=0)
    tune.add_argument("--debug", action="store_true", default=argparse.SUPPRESS)


def _tune_decisions(args) -> int:
    from .analysis.tune import fit_run  # lazy: `--help` stays instant
    from .metrics.stats import check_draws

    if args.parts < 2:
        raise UserError(f"--parts: need at least 2 cross-fitting parts, got {args.parts}")
    check_draws(args.draws)
    fit_run(args.run_dir, table=True, parts=args.parts, draws=args.draws, seed=args.seed)
    return 0


COMMANDS = {"train": _train, "distill": _distill, "predict": _predict, "export": _export, "report": _report,
            "explain": _explain, "synth": _synth, "sweep": _sweep, "compare": _compare, "config": _config,
            "tune-decisions": _tune_decisions}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """Options may come anywhere: `train key=value --heads age` as well as `train --heads age key=value`.

    argparse takes one run of positionals, so overrides after an option come back unrecognised: they are the
    train command's overrides. Anything else unrecognised is the usual usage error."""
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    unknown = [a for a in rest if a.startswith("-") or args.command not in ("train", "distill")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if rest:
        args.overrides = [*args.overrides, *rest]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    debug = getattr(args, "debug", False) or os.environ.get("MULTITASK_DEBUG") == "1"
    try:
        with sigterm_as_interrupt():   # a scheduler's or `timeout`'s stop ends like Ctrl-C: cleaned up, resumable
            return COMMANDS[args.command](args)
    except Terminated:
        print("terminated", file=sys.stderr)
        return TERMINATED_EXIT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if debug:
            raise
        print(f"error: {one_line(err)}", file=sys.stderr)
        # 2: bad input or a full/unwritable disk (the person can fix it); 1: a bug, worth the traceback
        return 2 if isinstance(err, (UserError, OSError)) else 1

