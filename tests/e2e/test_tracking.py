"""Tracker fan-out: TensorBoard + wandb offline + metrics.csv + rich console; wandb failures never stop a run."""
import csv
import io

import cv2
import numpy as np
import pytest
from helpers import tb_scalars, tb_texts
from rich.console import Console
from wandb_record import logged

from multitask.config import load_config
from multitask.metrics.figures import confusion_figure, draw_confusion
from multitask.tracking.tracker import Tracker


def _cfg(*overrides):
    return load_config(None, ["name=trk", *overrides])


def _quiet():
    return Console(file=io.StringIO(), width=200, force_terminal=False)


def test_tracker_fans_out_to_tensorboard_wandb_and_csv(tmp_path):
    run_dir = tmp_path / "run"
    tracker = Tracker(run_dir=run_dir, cfg=_cfg(), console=_quiet())
    assert tracker.wandb_id
    tracker.log({"train/mask/loss": 1.5, "lr": 0.01}, step=10)
    tracker.log_epoch(1, {"val/mask/f1": 0.5, "val/mask/loss": 0.9})
    tracker.log({"train/mask/loss": 1.0, "lr": 0.005}, step=20)
    tracker.log_epoch(2, {"val/mask/f1": 0.75, "val/mask/loss": 0.6, "val/composite/f1": 0.4})   # a new key
    matrix = np.array([[5, 1, 0], [2, 3, 1], [0, 0, 4]])
    tracker.log_confusion("mask", matrix, ["wear", "incorrect", "not_wear"], step=20)
    tracker.close()
    tracker.close()   # safe twice

    scalars, images = tb_scalars(run_dir / "tb")
    assert scalars["val/mask/f1"] == [(10, 0.5), (20, 0.75)]   # epoch rows land on the latest training step
    assert scalars["train/mask/loss"] == [(10, 1.5), (20, 1.0)]
    assert scalars["val/composite/f1"] == [(20, 0.4)]
    assert scalars["epoch"] == [(10, 1.0), (20, 2.0)]
    assert images == ["confusion/mask"]

    import wandb

    calls, latest = logged(run_dir), {}
    for _, row in calls:
        latest.update(row)
    assert latest["val/mask/f1"] == 0.75 and latest["val/composite/f1"] == 0.4 and latest["lr"] == 0.005
    assert [(s, r["val/mask/f1"]) for s, r in calls if "val/mask/f1" in r] == [(10, 0.5), (20, 0.75)]
    steps = [s for s, _ in calls]
    assert steps == sorted(steps)   # wandb drops a row whose step goes backwards
    image_step, image_row = next((s, r) for s, r in calls if "confusion/mask" in r)
    assert image_step == 20 and isinstance(image_row["confusion/mask"], wandb.Image)
    assert list(run_dir.glob("wandb/offline-run-*/files/media/images/confusion/mask_*.png"))

    with open(run_dir / "metrics.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == ["epoch", "val/mask/f1", "val/mask/loss", "val/composite/f1"]
    assert [r["epoch"] for r in table] == ["1", "2"]
    assert table[0]["val/composite/f1"] == "" and float(table[1]["val/composite/f1"]) == 0.4
    assert not list(run_dir.glob(".metrics.*"))   # atomic writes leave no temp files


def test_epoch_rows_use_the_epoch_as_step_when_nothing_logged_per_step(tmp_path):
    tracker = Tracker(run_dir=tmp_path, cfg=_cfg(), console=_quiet())
    for epoch in (1, 2, 3):
        tracker.log_epoch(epoch, {"val/age/f1": epoch / 4})
        tracker.log_confusion("age", np.eye(3, dtype=int) * epoch, ["<30", "30-59", ">=60"], step=epoch)
    tracker.close()
    scalars, _ = tb_scalars(tmp_path / "tb")
    assert scalars["val/age/f1"] == [(1, 0.25), (2, 0.5), (3, 0.75)]
    assert [(s, sorted(r)) for s, r in logged(tmp_path)] == [
        (e, keys) for e in (1, 2, 3) for keys in (["epoch", "val/age/f1"], ["confusion/age"])]


def test_resumed_tracker_keeps_history_and_wandb_id(tmp_path):
    cfg = _cfg("tracking.tensorboard=false")
    first = Tracker(run_dir=tmp_path, cfg=cfg, console=_quiet())
    for epoch in (1, 2, 3):
        first.log_epoch(epoch, {"val/mask/f1": epoch / 10}, step=epoch)
    run_id = first.wandb_id
    first.close()
    # resumed from the epoch-2 checkpoint: epoch 3 is trained again and replaces the old row
    second = Tracker(run_dir=tmp_path, cfg=cfg, console=_quiet(), resume_id=run_id)
    assert second.wandb_id == run_id
    second.log_epoch(3, {"val/mask/f1": 0.35, "val/age/f1": 0.2}, step=3)
    second.close()
    with open(tmp_path / "metrics.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [(r["epoch"], r["val/mask/f1"], r["val/age/f1"]) for r in table] == [
        ("1", "0.1", ""), ("2", "0.2", ""), ("3", "0.35", "0.2")]


def test_online_wandb_that_fails_falls_back_to_offline(tmp_path, monkeypatch):
    import wandb

    real_init, modes = wandb.init, []

    def init(*args, mode=None, **kwargs):
        modes.append(mode)
        if mode == "online":
            raise wandb.errors.CommError("Timed out while retrying: no such host")
        return real_init(*args, mode=mode, **kwargs)

    monkeypatch.setattr(wandb, "init", init)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    console = _quiet()
    tracker = Tracker(run_dir=tmp_path, cfg=_cfg("tracking.wandb.mode=online", "tracking.tensorboard=false"),
                      console=console)
    assert modes == ["online", "offline"]
    assert tracker.wandb_id is not None
    tracker.log_epoch(1, {"val/age/f1": 0.6}, step=5)
    tracker.close()
    assert "wandb online init failed (Timed out while retrying: no such host); logging offline instead" in \
        " ".join(console.file.getvalue().split())
    assert logged(tmp_path)[-1] == (5, {"val/age/f1": 0.6, "epoch": 1.0})


def test_online_without_api_key_goes_offline_without_asking(tmp_path, monkeypatch):
    import wandb

    modes = []
    real_init = wandb.init
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setattr(wandb, "login", lambda **kwargs: False if kwargs.get("prompt") is False
                        else pytest.fail("wandb.login may prompt"))
    monkeypatch.setattr(wandb, "init", lambda *a, mode=None, **k: modes.append(mode) or real_init(*a, mode=mode, **k))
    console = _quiet()
    tracker = Tracker(run_dir=tmp_path, cfg=_cfg("tracking.wandb.mode=online", "tracking.tensorboard=false"),
                      console=console)
    tracker.close()
    assert modes == ["offline"] and tracker.wandb_id is not None
    assert "no API key" in console.file.getvalue()


def test_wandb_failing_everywhere_is_switched_off(tmp_path, monkeypatch):
    import wandb

    def broken(*args, **kwargs):
        raise RuntimeError("service did not start")

    monkeypatch.setattr(wandb, "init", broken)
    tracker = Tracker(run_dir=tmp_path, cfg=_cfg(), console=_quiet())
    assert tracker.wandb_id is None
    tracker.log_epoch(1, {"val/mask/f1": 0.5}, step=1)
    tracker.close()
    assert (tmp_path / "metrics.csv").is_file()
    scalars, _ = tb_scalars(tmp_path / "tb")
    assert scalars["val/mask/f1"] == [(1, 0.5)]
    assert "going on without wandb" in tracker.console.file.getvalue()


def test_wandb_log_error_midway_does_not_stop_the_run(tmp_path, monkeypatch):
    import wandb

    real_init = wandb.init

    def broken_log(*args, **kwargs):
        raise ConnectionError("network went away")

    def init(*args, **kwargs):   # a run whose log fails from the start, as when its connection goes away
        run = real_init(*args, **kwargs)
        monkeypatch.setattr(run, "log", broken_log)
        return run

    monkeypatch.setattr(wandb, "init", init)
    tracker = Tracker(run_dir=tmp_path, cfg=_cfg("tracking.tensorboard=false"), console=_quiet())
    tracker.log_epoch(1, {"val/mask/f1": 0.5}, step=1)
    tracker.log_epoch(2, {"val/mask/f1": 0.6}, step=2)   # wandb is off now; the csv still gets its row
    tracker.close()
    assert "going on without it" in tracker.console.file.getvalue()
    assert len((tmp_path / "metrics.csv").read_text().splitlines()) == 3


def test_disabled_tracker_writes_nothing(tmp_path):
    run_dir = tmp_path / "rank1"
    console = _quiet()
    tracker = Tracker(run_dir=run_dir, cfg=_cfg(), enabled=False, console=console)
    tracker.log({"lr": 0.1}, step=1)
    tracker.log_epoch(1, {"val/mask/f1": 0.5})
    tracker.log_confusion("mask", np.eye(3), ["a", "b", "c"], step=1)
    tracker.print("hello")
    assert tracker.epoch_table(1, {"val/mask/f1": 0.5}, heads=["mask"]) is None
    with tracker.progress(total=3, description="train") as bar:
        bar.update(images=8, loss=0.5)
    tracker.close()
    assert not run_dir.exists() and tracker.wandb_id is None
    assert console.file.getvalue() == ""


def test_epoch_table_marks_the_best_so_far(tmp_path):
    cfg = _cfg("tracking.tensorboard=false", "tracking.wandb.mode=disabled", "tracking.csv=false")
    console = Console(file=io.StringIO(), width=220, force_terminal=False)
    tracker = Tracker(run_dir=tmp_path, cfg=cfg, console=console)
    metrics = {"train/mask/loss": 0.8, "val/mask/loss": 0.7, "val/mask/acc": 0.9, "val/mask/f1": 0.85,
               "val/mask/f1_wear": 0.9, "val/mask/f1_incorrect": 0.8, "val/mask/f1_not_wear": 0.85,
               "val/gender/f1": 0.7, "val/composite/f1": 0.6, "lr": 2.5e-05,
               **{f"val/composite/f1_c{i}": 0.5 + i / 100 for i in range(18)}}
    tracker.epoch_table(1, metrics, heads=["mask", "gender"])
    first = console.file.getvalue()
    assert "0.850*" in first and "wear 0.90 incorrect 0.80 not_wear 0.85" in first
    assert "0.800/0.700" in first  # train/val loss in one cell
    assert "18 classes, worst c0 0.50" in first and "lr 2.5e-05" in first
    console.file.truncate(0)
    console.file.seek(0)
    table = tracker.epoch_table(2, {**metrics, "val/mask/f1": 0.8, "val/gender/f1": 0.75}, heads=["mask", "gender"])
    second = console.file.getvalue()
    assert "0.800*" not in second and "0.850 e1" in second     # mask got worse: best stays epoch 1
    assert "0.750*" in second and "0.750 e2" in second         # gender improved
    assert [c.header for c in table.columns][:5] == ["head", "loss tr/val", "acc", "F1", "best"]
    assert table.row_count == 3
    tracker.close()


def test_progress_counts_and_can_be_silenced(tmp_path):
    cfg = _cfg("tracking.tensorboard=false", "tracking.wandb.mode=disabled")
    console = Console(file=io.StringIO(), width=160, force_terminal=False)
    tracker = Tracker(run_dir=tmp_path, cfg=cfg, console=console)
    with tracker.progress(total=5, description="epoch 1 train") as bar:
        for step in range(5):
            bar.update(images=16, loss=0.25 if step == 4 else None)
    assert (bar.done, bar.images, bar.values["loss"]) == (5, 80, "0.2500")
    shown = console.file.getvalue()
    assert "epoch 1 train" in shown and "5/5" in shown and "loss 0.2500" in shown and "img/s" in shown
    silent_cfg = _cfg("tracking.progress=false", "tracking.tensorboard=false", "tracking.wandb.mode=disabled")
    silent_console = Console(file=io.StringIO(), force_terminal=False)
    silent = Tracker(run_dir=tmp_path / "s", cfg=silent_cfg, console=silent_console)
    with silent.progress(total=2, description="quiet") as bar:
        bar.update(images=4)
    assert silent_console.file.getvalue() == ""


def test_confusion_figure_renders_counts_and_row_shares():
    """The one confusion figure: the report's matrices and the trackers' confusion/<head> images."""
    matrix = np.array([[8, 2], [0, 0]])   # an empty true class must not divide by zero
    fig = draw_confusion(matrix, ["male", "female"], "gender")
    counts, shares = fig.axes[:2]   # then the two colour bars
    assert [t.get_text() for t in counts.texts] == ["8", "2", "0", "0"]
    np.testing.assert_allclose(np.asarray(shares.images[0].get_array()), [[0.8, 0.2], [0.0, 0.0]])
    image = cv2.imdecode(np.frombuffer(confusion_figure(matrix, ["male", "female"], "gender"), np.uint8),
                         cv2.IMREAD_COLOR)
    assert image is not None and image.ndim == 3 and image.std() > 0
    with pytest.raises(AssertionError, match="does not fit 3 class names"):
        confusion_figure(matrix, ["a", "b", "c"], "x")


def test_report_tracker_adds_figures_tables_and_numbers_to_the_run(tmp_path):
    """What `report --log` uses: the training's TensorBoard folder and its wandb run id, wandb offline."""
    cfg = _cfg("tracking.tensorboard=false")
    training = Tracker(run_dir=tmp_path, cfg=cfg, console=_quiet())
    training.log_epoch(1, {"val/mask/f1": 0.5}, step=1)
    training.close()
    before = len(logged(tmp_path))
    png = confusion_figure(np.eye(2, dtype=int), ["a", "b"], "mask")
    with Tracker.for_report(tmp_path, sinks=["tensorboard", "wandb"], console=_quiet()) as tracker:
        assert tracker.sinks == ["tensorboard", "wandb"] and tracker.wandb_id == training.wandb_id
        tracker.log_images({"report/mask_confusion": png})
        tracker.log_tables({"report/head-mask/0": (["class", "F1"], [["a", "1.000"], ["b|c", "0.500"]])})
        tracker.log_summary({"report/mask/f1": 0.75})
    scalars, images = tb_scalars(tmp_path / "tb")
    assert scalars["report/mask/f1"] == [(0, 0.75)] and images == ["report/mask_confusion"]
    text = tb_texts(tmp_path / "tb")["report/head-mask/0"]
    assert text == "| class | F1 |\n|---|---|\n| a | 1.000 |\n| b\\|c | 0.500 |"   # | escaped in a cell
    calls = logged(tmp_path)[before:]
    assert [sorted(r) for _, r in calls] == [["report/mask_confusion"], ["report/head-mask/0"]]
    assert [s for s, _ in calls] == [None, None]   # wandb's own step: the resumed run's counter goes on
    with Tracker.for_report(tmp_path, sinks=[], console=_quiet()) as nothing:
        assert nothing.sinks == []
