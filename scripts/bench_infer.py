"""Inference throughput in one process: the model-only forward ceiling vs `multitask predict` with TTA, and with
--onnx the same through onnxruntime (fp32 and int8) beside PyTorch fp32.

    python scripts/bench_infer.py                                   # resnet18, 224x224, batch 64, identity+hflip
    python scripts/bench_infer.py --size 96x72 --images 512 --workers 0 --repeats 3
    python scripts/bench_infer.py --model efficientnet_b0 --tta identity,hflip,fivecrop
    python scripts/bench_infer.py --size 128x96 --onnx --repeats 5  # + onnxruntime fp32 / int8 phases

  ceiling  model-only forward passes (inference mode, the configured AMP, channels_last) on one random batch of
           float pixels, as many passes per batch as the TTA has views: what the model alone can do here.
  predict  `multitask.infer.predict.run_predict` on the synthetic eval set (photos at the real 384x512): reading and
           decoding every JPEG, resizing, the loader, every TTA view, softmax and merging, submission.csv and
           predictions.csv. Its own timer covers the inference loop (decode included, model loading excluded).
With --onnx (the checkpoint exported once by `multitask.export.run_export`; int8 calibrated on the eval photos):
  fp32ceiling   the ceiling without autocast (PyTorch fp32, channels_last)
  ort, ort_int8 model-only onnxruntime session runs on one random uint8 batch (softmax included, in the graph)
  predict_ort, predict_int8   `run_predict` on the .onnx files: the predict phase through onnxruntime

All are counted in forward images per second (images x views / s); predict runs once untimed first (each backend)
so that every phase meets a warm model. The model is a freshly initialised checkpoint (weights do not change the
speed); ratios are taken within each repeat (its phases ran back to back), then the median.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402
from bench_train import STEMS_PER_PERSON, machine, parse_size, proc_status, reset_peak_rss, synthetic_root  # noqa: E402


def make_checkpoint(path: Path, *, model: str, size: tuple[int, int], amp: str) -> Path:
    from multitask.config import load_config, to_dict
    from multitask.model import create_model
    from multitask.runs import FORMAT, VERSION, save_checkpoint

    cfg = load_config(None, [f"model.backbone={model}", f"data.image_size=[{size[0]},{size[1]}]",
                             f"train.amp={amp}"])
    torch.manual_seed(0)
    net = create_model(cfg)
    save_checkpoint(path, {"format": FORMAT, "version": VERSION, "config": to_dict(cfg),
                           "trained_heads": [h.name for h in cfg.trained_heads()], "epoch": 0, "step": 0,
                           "metric": {"name": "none", "value": None}, "model": net.state_dict(), "ema": None})
    return path


def phase_ceiling(ckpt: Path, *, batch: int, views: int, images: int, amp: str, warmup: int = 2) -> float:
    """Forward images/s of the bare model on one random batch, `views` passes per batch."""
    from multitask.runs import load_checkpoint, model_from_checkpoint
    from multitask.utils import resolve_precision

    model, cfg = model_from_checkpoint(load_checkpoint(ckpt))
    model = model.to(memory_format=torch.channels_last).eval()
    precision = resolve_precision(amp, torch.device("cpu"))
    height, width = cfg.data.image_size
    x = torch.randint(0, 256, (batch, 3, height, width)).float().contiguous(memory_format=torch.channels_last)
    steps = max(1, -(-images // batch))
    with torch.inference_mode():
        for _ in range(warmup):
            with precision.autocast():
                model(x)
        start = time.perf_counter()
        for _ in range(steps * views):
            with precision.autocast():
                out = model(x)
            for logits in out.values():
                logits.float().softmax(-1)
    return steps * views * batch / (time.perf_counter() - start)


def phase_ort(model_path: Path, *, batch: int, views: int, images: int, warmup: int = 2) -> float:
    """Forward images/s of an onnxruntime session on one random uint8 batch, `views` runs per batch."""
    from multitask.formats import onnx_session

    session = onnx_session(model_path)
    name = session.get_inputs()[0].name
    height, width = session.get_inputs()[0].shape[1:3]     # NHWC, as exported
    x = torch.randint(0, 256, (batch, height, width, 3), dtype=torch.uint8).numpy()
    for _ in range(warmup):
        session.run(None, {name: x})
    steps = max(1, -(-images // batch))
    start = time.perf_counter()
    for _ in range(steps * views):
        session.run(None, {name: x})
    return steps * views * batch / (time.perf_counter() - start)


def phase_predict(ckpt: Path, root: Path, work: Path, *, batch: int, workers: int, tta: list[str], amp: str) -> dict:
    from rich.console import Console

    from multitask.infer import PredictOptions, run_predict

    quiet = Console(file=open(os.devnull, "w"))
    with tempfile.TemporaryDirectory(dir=work) as out:
        return run_predict(PredictOptions(ckpts=[str(ckpt)], data=str(root / "eval"), out=out, tta=tta,
                                          batch_size=batch, workers=workers, device="cpu", amp=amp), console=quiet)


def export_onnx(ckpt: Path, root: Path) -> dict[str, Path]:
    """fp32 and int8 .onnx next to the checkpoint (int8 calibrated on the eval photos)."""
    from rich.console import Console

    from multitask.export import run_export

    quiet = Console(file=open(os.devnull, "w"))
    paths = {"fp32": ckpt.with_suffix(".onnx"), "int8": ckpt.with_suffix(".int8.onnx")}
    start = time.perf_counter()
    run_export(ckpt=ckpt, out=paths["fp32"], console=quiet)
    run_export(ckpt=ckpt, out=paths["int8"], quantize="int8", data=str(root / "eval"), console=quiet)
    print(f"exported fp32 and int8 ONNX in {time.perf_counter() - start:.1f}s", flush=True)
    return paths


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet18")
    p.add_argument("--size", type=parse_size, default=(224, 224), help="input N or HxW (default 224)")
    p.add_argument("--batch", type=int, default=64, help="predict's default batch size (64)")
    p.add_argument("--images", type=int, default=256, help="eval images, at least (default 256)")
    p.add_argument("--workers", type=int, default=2, help="predict's loader workers (default 2, its default)")
    p.add_argument("--tta", default="identity,hflip")
    p.add_argument("--amp", default="auto", choices=["auto", "bf16", "off"])
    p.add_argument("--onnx", action="store_true", help="add the PyTorch fp32 and onnxruntime fp32 / int8 phases")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each phase; medians reported")
    p.add_argument("--work", default=".cache/bench")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    return p


QUIET = 0.25   # cores other processes may use during a repeat's phases for it to count as quiet
# ratios printed when both phases ran: (numerator, denominator)
RATIOS = [("predict", "ceiling"), ("ort", "ceiling"), ("ort", "fp32ceiling"), ("ort_int8", "ceiling"),
          ("ort_int8", "ort"), ("predict_ort", "predict"), ("predict_int8", "predict"), ("predict_int8", "ort_int8")]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from multitask.infer import resolve_views, view_count

    tta = resolve_views(args.tta.split(","))
    views = view_count(tta)
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    # the synthetic writer gives ceil(people / 4) eval people, 7 photos each
    root = synthetic_root(work, 4 * -(-args.images // STEMS_PER_PERSON))
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        ckpt = make_checkpoint(Path(tmp) / "bench.pt", model=args.model, size=args.size, amp=args.amp)
        n_eval = sum(1 for _ in (root / "eval" / "images").iterdir())
        print(f"machine: {machine()}")
        print(f"{args.model} {args.size[0]}x{args.size[1]} batch {args.batch}, {n_eval} eval photos 384x512, "
              f"tta {','.join(tta)} ({views} views), predict workers {args.workers}, amp {args.amp}", flush=True)
        predict = dict(root=root, work=work, batch=args.batch, workers=args.workers, tta=tta)
        phases = {
            "ceiling": lambda: phase_ceiling(ckpt, batch=args.batch, views=views, images=n_eval, amp=args.amp),
            "predict": lambda: phase_predict(ckpt, amp=args.amp, **predict),
        }
        if args.onnx:
            onnx = export_onnx(ckpt, root)
            phases = {
                "ceiling": phases["ceiling"],
                "fp32ceiling": lambda: phase_ceiling(ckpt, batch=args.batch, views=views, images=n_eval, amp="off"),
                "ort": lambda: phase_ort(onnx["fp32"], batch=args.batch, views=views, images=n_eval),
                "ort_int8": lambda: phase_ort(onnx["int8"], batch=args.batch, views=views, images=n_eval),
                "predict": phases["predict"],
                "predict_ort": lambda: phase_predict(onnx["fp32"], amp=args.amp, **predict),
                "predict_int8": lambda: phase_predict(onnx["int8"], amp=args.amp, **predict),
            }
        for name in [n for n in phases if n.startswith("predict")]:   # warm-up: first decode, first session
            phases[name]()
        measured = measure(phases, args.repeats)
    report(measured, views=views, json_path=args.json, args=args)
    return 0


def cpu_seconds() -> tuple[float, float]:
    """(busy CPU seconds of the whole machine, CPU seconds of this process and its finished children); (0, 0) off
    Linux. Their difference over a phase is what other processes took from the machine meanwhile."""
    times = os.times()
    own = times.user + times.system + times.children_user + times.children_system
    try:
        with open("/proc/stat") as f:
            user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in f.readline().split()[1:8])
    except (OSError, ValueError):
        return 0.0, 0.0
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK"), own


def measure(phases: dict, repeats: int) -> dict:
    """Every phase once per repeat, back to back: rates, photos/s, peak RSS, and the cores other processes used."""
    runs: dict[str, list[float]] = {name: [] for name in phases}
    photos: dict[str, list[float]] = {name: [] for name in phases if name.startswith("predict")}
    others: list[float] = []   # per repeat: the most cores other processes used during any of its phases
    peaks: dict[str, int] = {}
    for repeat in range(repeats):
        busiest = 0.0
        for name, phase in phases.items():
            reset_peak_rss()
            (busy0, own0), start = cpu_seconds(), time.perf_counter()
            result = phase()
            (busy1, own1), wall = cpu_seconds(), time.perf_counter() - start
            busiest = max(busiest, max(0.0, (busy1 - busy0) - (own1 - own0)) / wall)
            if isinstance(result, dict):
                runs[name].append(result["forward_images_per_s"])
                photos[name].append(result["images_per_s"])
            else:
                runs[name].append(result)
            peaks[name] = max(peaks.get(name, 0), proc_status().get("VmHWM", 0))
        others.append(busiest)
        print(f"  [{repeat + 1}/{repeats}] " + "  ".join(f"{n} {v[-1]:.1f}" for n, v in runs.items())
              + f" fwd img/s  other processes {busiest:.2f} cores", flush=True)
    return {"runs": runs, "photos_per_s": photos, "other_cores": others, "peak_rss_mib": peaks}


def report(measured: dict, *, views: int, json_path: str | None, args) -> None:
    """Medians over the quiet repeats (other processes used < QUIET cores throughout) when there are any."""
    runs, photos, others, peaks = (measured[k] for k in ("runs", "photos_per_s", "other_cores", "peak_rss_mib"))
    any_quiet = any(o < QUIET for o in others)
    quiet = [i for i, o in enumerate(others) if o < QUIET or not any_quiet]
    pick = lambda values: [values[i] for i in quiet]  # noqa: E731
    which = f"the {len(quiet)} quiet ones" if any_quiet else "all (none was quiet)"
    print(f"\nmedians over {which} of {len(others)} repeats; cores used by other processes per repeat: "
          f"{' '.join(f'{o:.2f}' for o in others)} (quiet: < {QUIET})")
    print(f"{'phase':13s} {'fwd img/s':>10s} {'photos/s':>9s} {'peak RSS':>9s}   runs")
    for name, values in runs.items():
        rate = f"{statistics.median(pick(photos[name])):9.1f}" if name in photos else " " * 9
        print(f"{name:13s} {statistics.median(pick(values)):10.1f} {rate} {peaks[name]:6d} MiB   "
              f"{' '.join(f'{v:.1f}' for v in values)}")
    ratios = {}
    for a, b in RATIOS:
        if a in runs and b in runs:
            paired = [x / y for x, y in zip(runs[a], runs[b])]
            ratios[f"{a}/{b}"] = {"median": statistics.median(pick(paired)), "per_repeat": paired}
            print(f"{a + '/' + b:26s} {ratios[f'{a}/{b}']['median']:5.2f}   per repeat: "
                  f"{' '.join(f'{r:.2f}' for r in paired)}")
    print(f"(photos/s = forward img/s / {views} views)")
    if json_path:
        Path(json_path).write_text(json.dumps({"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()},
                                               **measured, "quiet_repeats": quiet, "ratios": ratios}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
