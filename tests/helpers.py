"""Helpers shared by the tests (imported as `from helpers import ...`; pytest puts tests/ on the path)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from wandb_record import logged

from multitask.config import load_config, to_dict
from multitask.data.synthetic_faces import STEMS
from multitask.heads import HeadSpec
from multitask.infer.predict import PredictOptions, run_predict
from multitask.metrics.table import read_table
from multitask.model.net import create_model
from multitask.runs.checkpoint import save_checkpoint

REPO = Path(__file__).resolve().parents[1]   # the checkout: configs/, and ../shared beside it
QUICKSTART = str(REPO / "configs" / "quickstart.yaml")
LR_SPACE = "params:\n  train.lr: {low: 1e-4, high: 1e-2, log: true}\n"   # a one-key sweep space
TINY_PEOPLE = 16                          # the session's synthetic set (conftest.synth_root): 16 people,
TINY_IMAGES = TINY_PEOPLE * len(STEMS)    # each with the competition's 7 photos
SINGLE18 = ["heads.class18.derive=[mask,gender,age]", "train.heads=[class18]",
            "heads.class18.classes=[" + ",".join(f"c{i}" for i in range(18)) + "]"]
FAST = dict(batch_size=8, workers=0, device="cpu", amp="off")


def mask_heads() -> list[HeadSpec]:
    """The competition's three heads, as a config's defaults make them."""
    return [HeadSpec(classes=["wear", "incorrect", "not_wear"], name="mask"),
            HeadSpec(classes=["male", "female"], name="gender"),
            HeadSpec(classes=["<30", "30-59", ">=60"], name="age", bins=[30, 60], eval_bins=[30, 60])]


def random_batches(heads, n=60, batches=3, seed=0, unlabelled=None) -> list[tuple[dict, dict]]:
    """(logits, targets) batches of random numbers for `heads`; `unlabelled`: {head: share of rows set to -1}."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(batches):
        logits = {h.name: torch.from_numpy(rng.normal(size=(n, h.num_classes))).float() for h in heads}
        targets = {h.name: torch.from_numpy(rng.integers(0, h.num_classes, n)) for h in heads}
        if unlabelled:
            for name, frac in unlabelled.items():
                targets[name][torch.from_numpy(rng.random(n) < frac)] = -1
        out.append((logits, targets))
    return out


def predict(*, console=None, **options) -> dict:
    """`multitask predict` with these flags (PredictOptions fields)."""
    return run_predict(PredictOptions(**options), console=console)


def tiny_overrides(root, tmp_path, *extra, runs: str = "runs", cache: str = "cache") -> list[str]:
    """The overrides every training test starts from: the session's tiny synthetic set at `root`, 32x32 images,
    timm's 0.4M-parameter test_resnet (resnet18's checkpoints alone cost a tiny run half a second), 1 epoch, batch
    16, no loader workers, no wandb, no progress bars, no per-epoch confusion figures (a third of a tiny run's time;
    the tracker tests draw them), seed 0; `extra` overrides any of them."""
    return [f"data.root={root}", "data.synthesize_if_missing=false", "data.image_size=[32,32]", "data.num_workers=0",
            "data.n_folds=4", f"data.cache_dir={tmp_path / cache}", f"output_dir={tmp_path / runs}", "train.epochs=1",
            "train.batch_size=16", "model.backbone=test_resnet", "tracking.wandb.mode=disabled",
            "tracking.progress=false", "tracking.confusion_every=0", "seed=0", *extra]


class Commands:
    """Command lines for tiny runs: the session's tiny data (`root`) and a test's folder (`tmp`), without TensorBoard;
    `sweep` writes its space file there."""

    def __init__(self, root: Path, tmp: Path):
        self.root, self.tmp = root, tmp
        self.tiny = tiny_overrides(root, tmp, "tracking.tensorboard=false")

    def space(self, text: str, name: str = "space.yaml") -> str:
        path = self.tmp / name
        path.write_text(text)
        return str(path)

    def sweep(self, space_text: str, *extra: str, name: str = "space.yaml") -> list[str]:
        return ["sweep", "--config", QUICKSTART, "--space", self.space(space_text, name), "--trials", "1", *extra,
                *self.tiny]

    def compare_same(self) -> list[str]:
        run = self.tmp / "run"
        run.mkdir()
        (run / "oof.csv").write_text("image_id\n")
        return ["compare", str(run), str(run)]


class OneFaceDetector:
    """Stands in for MTCNN: one face at a fixed place; counts its calls (class-wide: reset `calls` before use)."""
    calls = 0

    def detect_faces(self, image):
        OneFaceDetector.calls += 1
        h, w = image.shape[:2]
        return [{"box": [w // 4, h // 5, w // 2, h // 2], "confidence": 0.99}]


def error_line(capsys) -> str:
    """The one line a failed command wrote to stderr, without its `error: `: exactly one line, no traceback."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0][len("error: "):]


def make_ckpt(path: Path, *, backbone="test_resnet", size=(32, 32), seed=0, overrides=()) -> Path:
    """An untrained checkpoint whose members clearly differ (timm's tiny test_resnet unless `backbone` says)."""
    cfg = load_config(None, [f"model.backbone={backbone}", f"data.image_size=[{size[0]},{size[1]}]", *overrides])
    torch.manual_seed(seed)
    model = create_model(cfg)
    with torch.no_grad():  # random BN statistics and a larger head spread: members clearly differ from each other
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
        for head in model.heads.values():
            if isinstance(head, torch.nn.Sequential):   # a years head keeps its own spread
                head[-1].weight.mul_(20)
    save_checkpoint(path, {"format": "multitask-checkpoint", "version": 1, "config": to_dict(cfg),
                           "trained_heads": [h.name for h in cfg.trained_heads()], "epoch": 1, "step": 1,
                           "metric": {"name": "x", "value": 0.0}, "model": model.state_dict(), "ema": None})
    return path


def predicted(out: Path):
    table, heads, probs, targets = read_table(out / "predictions.csv")
    return table, {h.name: h for h in heads}, probs, targets


def wandb_history(run_dir):
    """Rows the runs made in run_dir logged to wandb, each with its `_step` (None: wandb's own counter)."""
    return [{**payload, "_step": step} for step, payload in logged(run_dir)]


def tb_scalars(tb_dir):
    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    scalars = {tag: [(e.step, round(e.value, 6)) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    return scalars, acc.Tags()["images"]


def tb_texts(tb_dir):
    acc = EventAccumulator(str(tb_dir), size_guidance={"tensors": 0})
    acc.Reload()
    suffix = "/text_summary"
    return {tag[: -len(suffix)]: acc.Tensors(tag)[-1].tensor_proto.string_val[0].decode()
            for tag in acc.Tags()["tensors"] if tag.endswith(suffix)}


def files_under(folder: Path, *, dirs: bool = False) -> list[str]:
    """Every file below `folder` (and folder, with dirs=True) as a sorted relative path; [] when it does not exist:
    what tests compare to say that nothing was written or changed."""
    if not Path(folder).exists():
        return []
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*") if dirs or p.is_file())


def image_count(folder: Path) -> int:
    """How many .jpg files a folder holds (a data set's eval/images, say)."""
    return len(list(Path(folder).glob("*.jpg")))
