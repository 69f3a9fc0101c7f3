"""Training throughput in one process: the model-only ceiling, the multitask train path, a baseline-style pipeline.

    python scripts/bench_train.py                                     # resnet18, 224x224, batch 32, 640 images
    python scripts/bench_train.py --model efficientnet_b0 --size 128x96 --images 320 --epochs 3 --repeats 3
    python scripts/bench_train.py --phases multitask --workers 1      # one phase, another loader setting
    python scripts/bench_train.py --memory 2000,20000 --size 224      # loader RSS at 2k vs 20k cached images
    python scripts/bench_train.py --profile 5                         # top ops of each pipeline's model step

The source images are synthetic faces in the competition layout at the real photo size (384 wide x 512 high), written
once under --work and reused. Four phases, same model, batch, image size, optimizer and precision where it applies:

  ceiling    model-only training steps on one random uint8 batch (create_model, the configured AMP and memory format,
             the same optimizer, plain cross-entropy per head): what the model alone can do on this machine.
  multitask  `multitask.train.fit` end to end: competition reader, folds, decode-once cache, augmentations, loader,
             AMP, per-head losses, metrics, validation, checkpoints, tracking. Only the training epochs after the first
             are timed (the first builds the cache and warms up), by a training callback: no hook runs
             inside the loop.
  baseline   the common competition baseline: PIL decode of every JPEG every epoch, torchvision Resize + ToTensor +
             Normalize, fp32, contiguous NCHW, one timm model with an 18-class head, a DataLoader with the same
             workers, epochs after the first timed.
  fp32ceiling  the baseline's model alone (fp32, NCHW, 18 classes) on a random batch. ceiling/fp32ceiling is what
             multitask/baseline would be were both pipelines at their model-only ceilings: the bound that the
             machine's bf16 and channels_last speed-up puts on it.

Prints img/s per phase (median over --repeats), multitask/ceiling, multitask/baseline and ceiling/fp32ceiling, and
the peak RSS of each phase (VmHWM, reset before each phase where Linux allows) plus getrusage's peaks for the process
and its children.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_SILENT", "true")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))    # runnable from a fresh checkout, uninstalled

import torch  # noqa: E402

SOURCE_WIDTH, SOURCE_HEIGHT = 384, 512    # the competition's photos
PHASES = ("ceiling", "multitask", "baseline", "fp32ceiling")
STEMS_PER_PERSON = 7


# --------------------------------------------------------------------------------------------------- shared helpers
def parse_size(text: str) -> tuple[int, int]:
    """'224' -> (224, 224); '128x96' -> (128, 96) as height x width."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 16:
        raise argparse.ArgumentTypeError(f"--size: expected N or HxW with sides >= 16, got {text!r}")
    return parts[0], parts[1]


def synthetic_root(work: Path, people: int, *, width: int = SOURCE_WIDTH, height: int = SOURCE_HEIGHT) -> Path:
    """The synthetic competition set for `people` people at width x height, written once and reused."""
    from multitask.config import SynthConfig
    from multitask.data import ensure_synthetic

    root = work / f"synthetic-{width}x{height}-p{people}-s0"
    start = time.perf_counter()
    if ensure_synthetic(root, SynthConfig(people=people, width=width, height=height, seed=0)):
        print(f"wrote {people * STEMS_PER_PERSON} synthetic training photos ({width}x{height}) to {root} "
              f"in {time.perf_counter() - start:.0f}s", flush=True)
    return root


def people_for(images: int, n_folds: int) -> int:
    """People whose training split (all folds but one) holds about `images` photos."""
    return max(n_folds, math.ceil(images / STEMS_PER_PERSON * n_folds / (n_folds - 1)))


def reset_peak_rss() -> bool:
    """Reset this process's VmHWM (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def proc_status(pid: int | str = "self") -> dict[str, int]:
    """VmHWM / VmRSS / RssAnon / RssFile in MiB from /proc (empty off Linux)."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem"):
                    out[key] = int(value.split()[0]) // 1024
    except OSError:
        pass
    return out


def rusage_peaks_mib() -> tuple[int, int]:
    """getrusage's peak RSS of this process and of its largest finished child, in MiB (Linux reports KiB)."""
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // scale,
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // scale)


def machine() -> str:
    name = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    return (f"{name}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads, "
            f"load {os.getloadavg()[0]:.2f}")


def bench_config(args, root: Path, work: Path):
    """The multitask config every phase derives from: defaults + the benchmark's model, size, batch and loader."""
    from multitask.config import load_config

    height, width = args.size
    overrides = [
        "name=bench", f"output_dir={work / 'runs'}", f"model.backbone={args.model}",
        f"data.root={root}", f"data.cache_dir={work / 'cache'}", f"data.image_size=[{height},{width}]",
        f"data.n_folds={args.folds}", f"train.batch_size={args.batch}", f"train.epochs={args.epochs}",
        f"train.amp={args.amp}", f"train.device={args.device}",
    ]
    if args.workers is not None:
        overrides.append(f"data.num_workers={args.workers}")
    return load_config(args.config, overrides + list(args.set))


# --------------------------------------------------------------------------------------------------- phases
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_steps(cfg, device: torch.device, *, baseline: bool = False, compile_model: bool = False):
    """(train step, inference step): model-only work on one fixed random batch, nothing loaded.

    baseline=False: the multitask model (create_model, the configured AMP and memory format, the same optimizer,
    plain cross-entropy per head). baseline=True: the baseline's model as it trains there (one timm model with an
    18-class head, fp32, contiguous NCHW, AdamW) - its ceiling, free of any data loading. compile_model wraps the
    model in torch.compile. Each step puts the model in its mode first (a flag check once it is there).
    """
    import timm

    from multitask.model import create_model
    from multitask.train import build_optimizer
    from multitask.utils import resolve_precision

    torch.manual_seed(0)
    height, width = cfg.data.image_size
    batch = cfg.train.batch_size
    if baseline:
        model = timm.create_model(cfg.model.backbone, num_classes=18).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
        precision = resolve_precision("off", device)
        memory_format = torch.contiguous_format
        x = torch.randn(batch, 3, height, width, device=device)
        targets = {"class18": torch.randint(0, 18, (batch,), device=device)}
    else:
        precision = resolve_precision(cfg.train.amp, device)
        memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
        model = create_model(cfg).to(device=device, memory_format=memory_format)
        optimizer = build_optimizer(model, None, cfg.train)
        x = torch.randint(0, 256, (batch, 3, height, width), dtype=torch.uint8, device=device)
        targets = {h.name: torch.randint(0, h.num_classes, (batch,), device=device) for h in cfg.trained_heads()}
    x = x.contiguous(memory_format=memory_format)
    net = torch.compile(model) if compile_model else model
    scaler = torch.amp.GradScaler(device.type, enabled=precision.scaler)

    def losses(out) -> torch.Tensor:
        if not isinstance(out, dict):   # the baseline's plain timm model
            out = {"class18": out}
        return sum(torch.nn.functional.cross_entropy(out[k].float(), v) for k, v in targets.items())

    def train_step():
        if not model.training:
            model.train()
        with precision.autocast():
            out = net(x)
        scaler.scale(losses(out)).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    def infer_step():
        if model.training:
            model.eval()
        with torch.inference_mode(), precision.autocast():
            net(x)
    return train_step, infer_step


def phase_ceiling(cfg, args, images: int, *, baseline: bool = False) -> float:
    """img/s of model-only training steps over `images` images, after --warmup untimed steps."""
    device = torch.device(args.device)
    step, _ = model_steps(cfg, device, baseline=baseline)
    for _ in range(args.warmup):
        step()
    batch = cfg.train.batch_size
    steps = max(1, math.ceil(images / batch))
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return steps * batch / (time.perf_counter() - start)


def run_profile(cfg, args) -> None:
    """torch.profiler over --profile model-only steps of each pipeline: where a step's time goes, op by op."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device.startswith("cuda") else [])
    sort = "self_cuda_time_total" if args.device.startswith("cuda") else "self_cpu_time_total"
    for name, baseline in (("multitask model step (ceiling)", False), ("baseline model step (fp32, NCHW)", True)):
        step, _ = model_steps(cfg, torch.device(args.device), baseline=baseline)
        for _ in range(max(1, args.warmup)):
            step()
        with profile(activities=activities) as prof:
            for _ in range(args.profile):
                step()
            sync(torch.device(args.device))
        print(f"\n# {name}: {args.profile} steps of batch {cfg.train.batch_size}")
        print(prof.key_averages().table(sort_by=sort, row_limit=args.profile_rows, max_name_column_width=44))


def epoch_timer():
    """A training callback that records (images, seconds) of each epoch's training loop, validation excluded."""
    from multitask.train import Callback

    class EpochTimer(Callback):
        timings: list[tuple[int, float]] = []

        def on_epoch_start(self, state, epoch):
            self.start = time.perf_counter()

        def on_train_epoch_end(self, state, train_metrics):
            self.timings.append((state.epoch_images, time.perf_counter() - self.start))
    return EpochTimer()


def phase_multitask(cfg, args, work: Path) -> tuple[float, int]:
    """multitask.train.fit end to end; img/s of the training epochs after the first, and the train split's size."""
    from multitask.train import fit

    timer = epoch_timer()
    with tempfile.TemporaryDirectory(dir=work) as run_dir:
        fit(cfg, Path(run_dir), callbacks=[timer])
    later = timer.timings[1:] or timer.timings
    return sum(n for n, _ in later) / sum(t for _, t in later), timer.timings[0][0]


def phase_baseline(cfg, args, images: int) -> float:
    """PIL decode every epoch, torchvision transforms, fp32 NCHW, one 18-class timm model."""
    import timm
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms as T

    from multitask.data import rows_and_folds, split_indices
    from multitask.heads import composite_encode, label_array

    _, frame = rows_and_folds(cfg)
    train_idx, _ = split_indices(frame["fold"].to_numpy(), cfg.data.fold)
    heads = cfg.composite_heads()
    labels = composite_encode({h.name: label_array(h, frame, cfg.heads, eval=True) for h in heads}, heads)
    paths = frame["path"].to_numpy()[train_idx][:images]
    labels = labels[train_idx][:images]

    class PhotoDataset(Dataset):
        def __init__(self, paths, labels, transform):
            self.paths, self.labels, self.transform = paths, labels, transform

        def __len__(self):
            return len(self.paths)

        def __getitem__(self, i):
            image = Image.open(self.paths[i]).convert("RGB")
            return self.transform(image), int(self.labels[i])

    height, width = cfg.data.image_size
    transform = T.Compose([T.Resize((height, width)), T.ToTensor(), T.Normalize(cfg.data.mean, cfg.data.std)])
    loader = DataLoader(PhotoDataset(paths, labels, transform), batch_size=cfg.train.batch_size, shuffle=True,
                        num_workers=cfg.data.num_workers)
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = timm.create_model(cfg.model.backbone, num_classes=18).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    timed_images, timed_seconds = 0, 0.0
    for epoch in range(cfg.train.epochs):
        start, seen = time.perf_counter(), 0
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            seen += len(x)
        sync(device)
        if epoch > 0 or cfg.train.epochs == 1:
            timed_images += seen
            timed_seconds += time.perf_counter() - start
    return timed_images / timed_seconds


# --------------------------------------------------------------------------------------------------- memory mode
def memory_one(args, rows: int) -> dict:
    """Build a cache of `rows` images (distinct source files reused) and read one epoch through the train loader.

    No training: this isolates what the data path holds in memory as the data set grows.
    """
    from multitask.config import load_config
    from multitask.data import make_loader, prepare_data, train_sampler

    work = Path(args.work)
    distinct = min(rows, 2000)
    root = synthetic_root(work, math.ceil(distinct / STEMS_PER_PERSON), width=96, height=128)
    sources = sorted(str(p) for p in (root / "train" / "images").rglob("*.jpg"))[:distinct]
    manifest = work / f"manifest-{rows}.csv"
    with open(manifest, "w") as f:
        f.write("path,mask,gender,age,group\n")
        for i in range(rows):   # labels only need to be valid; 7 rows per group like real people
            f.write(f"{sources[i % distinct]},{i % 3},{(i // 7) % 2},{(i // 14) % 3},p{i // 7}\n")
    height, width = args.size
    cfg = load_config(args.config, [
        "data.source=manifest", f"data.manifest={manifest}", f"data.cache_dir={work / 'cache'}",
        f"data.image_size=[{height},{width}]", f"data.n_folds={args.folds}", f"train.batch_size={args.batch}",
        *([f"data.num_workers={args.workers}"] if args.workers is not None else []), *args.set])
    start = time.perf_counter()
    data = prepare_data(cfg, log=lambda _: None)
    build_s = time.perf_counter() - start
    after_build = proc_status()
    reset_peak_rss()
    loader = make_loader(data.train_set, train_sampler(data, cfg, rank=0, world_size=1),
                         batch_size=cfg.train.batch_size, workers=cfg.data.num_workers, train=True, pin_memory=False)
    max_anon, seen = 0, 0
    start = time.perf_counter()
    for images, _ in loader:
        images = images.contiguous(memory_format=torch.channels_last)   # what the training step does first
        seen += len(images)
        max_anon = max(max_anon, proc_status().get("RssAnon", 0))
    read_s = time.perf_counter() - start
    workers = [proc_status(w.pid) for w in getattr(loader._iterator, "_workers", [])] if loader._iterator else []
    main = proc_status()
    return {"rows": rows, "cache_mib": rows * height * width * 3 // 2**20, "build_s": round(build_s, 1),
            "read_img_s": round(seen / read_s), "images_read": seen,
            "main_hwm_mib": main.get("VmHWM"), "main_rss_after_build_mib": after_build.get("VmRSS"),
            "main_max_anon_mib": max_anon, "main_file_mib": main.get("RssFile"),
            "workers_hwm_mib": [w.get("VmHWM") for w in workers],
            "workers_anon_mib": [w.get("RssAnon") for w in workers],
            "workers_file_mib": [w.get("RssFile") for w in workers]}


def run_memory(args, argv: list[str]) -> None:
    """One fresh process per size, so each peak is its own."""
    rows_list = [int(r) for r in args.memory.split(",")]
    base = [a for a in argv if not a.startswith("--memory")]
    if "--memory" in argv:
        i = argv.index("--memory")
        base = argv[:i] + argv[i + 2:]
    results = []
    for rows in rows_list:
        out = subprocess.run([sys.executable, __file__, *base, "--memory-one", str(rows)], check=True,
                             capture_output=True, text=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"machine: {machine()}")
    for r in results:
        print(json.dumps(r))


# --------------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet18", help="timm backbone (default resnet18)")
    p.add_argument("--size", type=parse_size, default=(224, 224), help="input N or HxW (default 224)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--images", type=int, default=640, help="training images per epoch (default 640)")
    p.add_argument("--epochs", type=int, default=3, help="epochs per phase; the first is not timed (default 3)")
    p.add_argument("--workers", type=int, default=None, help="loader workers (default: the config's data.num_workers)")
    p.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"],
                   help="multitask/ceiling precision (auto: bf16 where fast; fp16 is for GPUs)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--phases", default=",".join(PHASES), help=f"comma list of {', '.join(PHASES)} (default all)")
    p.add_argument("--repeats", type=int, default=1, help="run the phases this many times; report medians")
    p.add_argument("--warmup", type=int, default=2, help="untimed ceiling steps first")
    p.add_argument("--config", default=None, help="base config (default: built-in defaults)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra config override")
    p.add_argument("--work", default=".cache/bench", help="synthetic data, image cache and run folders")
    p.add_argument("--memory", default=None, metavar="N,N", help="memory mode: loader RSS at these cache sizes")
    p.add_argument("--memory-one", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--profile", type=int, default=0, metavar="STEPS",
                   help="profile mode: torch.profiler over STEPS model-only steps of each pipeline, top ops")
    p.add_argument("--profile-rows", type=int, default=15, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    args.work = str(work)
    if args.memory_one is not None:
        print(json.dumps(memory_one(args, args.memory_one)))
        return 0
    if args.memory:
        run_memory(args, argv)
        return 0
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = set(phases) - set(PHASES)
    if unknown:
        raise SystemExit(f"--phases: unknown {', '.join(sorted(unknown))}; choose from {', '.join(PHASES)}")

    root = synthetic_root(work, people_for(args.images, args.folds))
    cfg = bench_config(args, root, work)
    print(f"machine: {machine()}")
    if args.profile:
        run_profile(cfg, args)
        return 0
    print(f"{args.model} {args.size[0]}x{args.size[1]} batch {args.batch}, workers {cfg.data.num_workers}, "
          f"amp {cfg.train.amp}, channels_last {cfg.train.channels_last}, {args.epochs} epochs, "
          f"source photos {SOURCE_WIDTH}x{SOURCE_HEIGHT}", flush=True)
    speeds: dict[str, list[float]] = {p: [] for p in phases}
    peaks: dict[str, int] = {}
    train_images = args.images
    for repeat in range(args.repeats):
        for phase in phases:
            reset_peak_rss()
            if phase == "ceiling":
                speed = phase_ceiling(cfg, args, train_images * max(1, args.epochs - 1))
            elif phase == "multitask":
                speed, train_images = phase_multitask(cfg, args, work)
            elif phase == "fp32ceiling":
                speed = phase_ceiling(cfg, args, train_images * max(1, args.epochs - 1), baseline=True)
            else:
                speed = phase_baseline(cfg, args, train_images)
            speeds[phase].append(speed)
            peaks[phase] = max(peaks.get(phase, 0), proc_status().get("VmHWM", 0))
            print(f"  [{repeat + 1}/{args.repeats}] {phase:9s} {speed:7.1f} img/s  "
                  f"(peak RSS {peaks[phase]} MiB, load {os.getloadavg()[0]:.2f})", flush=True)

    median = {p: statistics.median(v) for p, v in speeds.items()}
    self_peak, child_peak = rusage_peaks_mib()
    print(f"\n{'phase':10s} {'img/s':>8s} {'peak RSS':>9s}   runs")
    for p in phases:
        runs = " ".join(f"{v:.1f}" for v in speeds[p])
        print(f"{p:10s} {median[p]:8.1f} {peaks[p]:6d} MiB   {runs}")
    # a ratio per repeat (its phases ran back to back, under the same load), then the median of those
    ratios, paired = {}, {}
    for other in ("ceiling", "baseline"):
        if "multitask" in speeds and other in speeds:
            name = f"multitask/{other}"
            paired[name] = [m / o for m, o in zip(speeds["multitask"], speeds[other])]
            ratios[name] = statistics.median(paired[name])
            print(f"{name:20s} {ratios[name]:.2f}   per repeat: {' '.join(f'{r:.2f}' for r in paired[name])}")
    if "ceiling" in speeds and "fp32ceiling" in speeds:
        # were both pipelines at their model-only ceilings, multitask/baseline would be this: the hardware's bound
        name = "ceiling/fp32ceiling"
        paired[name] = [c / f for c, f in zip(speeds["ceiling"], speeds["fp32ceiling"])]
        ratios[name] = statistics.median(paired[name])
        print(f"{name:20s} {ratios[name]:.2f}   per repeat: {' '.join(f'{r:.2f}' for r in paired[name])}"
              f"   (the most multitask/baseline can reach here)")
    print(f"getrusage peak RSS: process {self_peak} MiB, largest finished child {child_peak} MiB; "
          f"load now {os.getloadavg()[0]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "args": {k: v for k, v in vars(args).items()},
                                               "img_s": speeds, "median": median, "ratios": ratios,
                                               "ratios_per_repeat": paired,
                                               "peak_rss_mib": peaks, "rusage_mib": [self_peak, child_peak]},
                                              indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
