"""Checkpoints: atomic save, weights_only load that refuses code, model rebuilt alone, run/fold dir resolution."""
import builtins
import errno
import pickle
import random

import numpy as np
import pytest
import torch

from multitask.config import load_config, to_dict
from multitask.model.net import create_model
from multitask.runs.checkpoint import (
    FORMAT,
    VERSION,
    checkpoint_info,
    load_checkpoint,
    model_from_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from multitask.runs.run_dir import resolve_checkpoints
from multitask.utils.errors import UserError


def _payload(cfg, model, *, ema=None, epoch=3):
    return {"format": FORMAT, "version": VERSION, "config": to_dict(cfg),
            "trained_heads": [h.name for h in cfg.trained_heads()], "epoch": epoch, "step": 120,
            "metric": {"name": "val/composite/f1", "value": np.float64(0.75)},   # numpy sneaks in from metrics
            "model": model.state_dict(), "ema": ema, "optimizer": None, "scheduler": None, "scaler": None,
            "criterion": None, "rng": rng_state(), "tracker": {"wandb_id": "abc123"}, "best": 0.75}


@pytest.fixture(scope="module")
def cfg():
    return load_config(None, ["train.heads=[age,mask]", "data.image_size=[32,32]", "data.mean=[0.5,0.4,0.3]"])


def _images(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, 3, 32, 32), generator=g, dtype=torch.uint8)


def test_round_trip_rebuilds_the_same_model(tmp_path, cfg):
    torch.manual_seed(1)
    model = create_model(cfg).eval()
    ema = {k: v + 0.01 if v.is_floating_point() else v for k, v in model.state_dict().items()}
    save_checkpoint(tmp_path / "best.pt", _payload(cfg, model, ema=ema))
    ckpt = load_checkpoint(tmp_path / "best.pt")
    assert ckpt["metric"]["value"] == 0.75 and type(ckpt["metric"]["value"]) is float
    assert ckpt["tracker"]["wandb_id"] == "abc123" and ckpt["epoch"] == 3

    plain, plain_cfg = model_from_checkpoint(ckpt, use_ema=False)
    assert not plain.training and plain.head_names == ["age", "mask"]
    assert plain_cfg.data.mean == [0.5, 0.4, 0.3] and plain_cfg.train.heads == ["age", "mask"]
    x = _images()
    with torch.no_grad():
        want, got = model(x), plain(x)
    for name in want:
        assert torch.equal(want[name], got[name])

    averaged, _ = model_from_checkpoint(ckpt)   # EMA weights by default; rebuilding twice works (ckpt untouched)
    assert ckpt["config"]["heads"]["age"]["name"] == "age"
    torch.testing.assert_close(averaged.trunk.conv1.weight, model.trunk.conv1.weight + 0.01)


def test_checkpoint_rebuild_never_downloads(tmp_path, cfg, monkeypatch):
    model = create_model(cfg)
    payload = _payload(cfg, model)
    payload["config"]["model"]["pretrained"] = True   # trained from hub weights; the rebuild must not fetch them
    save_checkpoint(tmp_path / "c.pt", payload)
    import timm

    real_create = timm.create_model

    def create(name, *, pretrained=False, **kwargs):   # timm's public entry point
        if pretrained:
            pytest.fail("tried to download weights")
        return real_create(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", create)
    rebuilt, rebuilt_cfg = model_from_checkpoint(load_checkpoint(tmp_path / "c.pt"))
    assert rebuilt_cfg.model.pretrained is True   # the config is reported as trained
    assert torch.equal(rebuilt.trunk.conv1.weight, model.trunk.conv1.weight)


def test_ddp_prefixes_are_stripped(tmp_path, cfg):
    model = create_model(cfg)
    payload = _payload(cfg, model)
    payload["model"] = {f"module.{k}": v for k, v in model.state_dict().items()}
    save_checkpoint(tmp_path / "ddp.pt", payload)
    rebuilt, _ = model_from_checkpoint(load_checkpoint(tmp_path / "ddp.pt"))
    assert torch.equal(rebuilt.heads["age"][1].weight, model.heads["age"][1].weight)


def test_failed_save_leaves_the_previous_checkpoint_intact(tmp_path, cfg, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"format": FORMAT, "version": VERSION, "epoch": 1})
    before = path.read_bytes()
    real_save = torch.save

    def disk_full(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")   # some bytes reach the disk, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(UserError) as info:
        save_checkpoint(path, {"format": FORMAT, "version": VERSION, "epoch": 2})
    assert str(info.value) == (f"could not write checkpoint {path}: No space left on device; "
                               "the previous checkpoint is intact")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]   # no temp file left behind
    monkeypatch.setattr(torch, "save", real_save)
    assert load_checkpoint(path)["epoch"] == 1


def test_unplain_payload_is_refused_at_save_time(tmp_path):
    with pytest.raises(TypeError, match=r"payload\['tracker'\]\['run'\]: object cannot go into a checkpoint"):
        save_checkpoint(tmp_path / "x.pt", {"format": FORMAT, "tracker": {"run": object()}})
    assert not (tmp_path / "x.pt").exists() and list(tmp_path.iterdir()) == []


class _CreatesFile:
    """Unpickling this calls open(path, 'w'): code execution if a loader trusts it."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return builtins.open, (self.path, "w")


def test_crafted_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned.txt"
    torch_file = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "version": VERSION, "model": _CreatesFile(marker)}, torch_file)
    raw_file = tmp_path / "evil.pkl"
    raw_file.write_bytes(pickle.dumps({"format": FORMAT, "x": _CreatesFile(marker)}, protocol=2))
    for path in (torch_file, raw_file):
        with pytest.raises(UserError) as info:
            load_checkpoint(path)
        assert str(info.value).startswith(f"{path} holds objects that are not plain tensors/data")
        assert str(info.value).endswith("refusing to load it (it could run code)")
        assert not marker.exists()
    pickle.loads(raw_file.read_bytes())   # the payload is live: a trusting loader would have run it
    assert marker.exists()


def test_files_that_are_not_checkpoints(tmp_path):
    with pytest.raises(UserError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "text.pt").write_text("hello, not a checkpoint")
    (tmp_path / "empty.pt").write_bytes(b"")
    torch.save({"model": {"w": torch.zeros(2)}}, tmp_path / "foreign.pt")   # a torch file, but not ours
    torch.save([1, 2, 3], tmp_path / "list.pt")
    for name in ("text.pt", "empty.pt", "foreign.pt", "list.pt"):
        with pytest.raises(UserError, match=f"{tmp_path / name} is not a multitask checkpoint"):
            load_checkpoint(tmp_path / name)
    with pytest.raises(UserError, match="is a folder"):
        load_checkpoint(tmp_path)
    torch.save({"format": FORMAT, "version": VERSION + 1}, tmp_path / "future.pt")
    with pytest.raises(UserError, match="newer than this multitask reads"):
        load_checkpoint(tmp_path / "future.pt")


def test_resolve_checkpoints(tmp_path):
    def touch(rel):
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
        return path.resolve()

    best, last = touch("run/best.pt"), touch("run/last.pt")
    only_last = touch("crashed/last.pt")
    folds = [touch(f"kfold/fold{i}/best.pt") for i in (0, 1, 2, 10)]
    touch("kfold/fold2/last.pt")
    single = touch("model.pt")
    assert resolve_checkpoints([str(tmp_path / "run")]) == [best]
    assert resolve_checkpoints([str(tmp_path / "crashed")]) == [only_last]
    assert resolve_checkpoints([str(tmp_path / "kfold")]) == folds   # fold10 after fold2
    assert resolve_checkpoints([str(single), str(tmp_path / "run"), str(tmp_path / "run/best.pt")]) == [single, best]
    assert last not in resolve_checkpoints([str(tmp_path / "run")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no checkpoint found"):
        resolve_checkpoints([str(tmp_path / "empty")])
    with pytest.raises(UserError, match="checkpoint not found: .*nowhere"):
        resolve_checkpoints([str(tmp_path / "nowhere")])
    (tmp_path / "kfold/fold3").mkdir()
    with pytest.raises(UserError, match="without best.pt/last.pt: fold3"):
        resolve_checkpoints([str(tmp_path / "kfold")])


def test_rng_state_survives_a_checkpoint(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.normal()   # a cached gaussian is part of numpy's state
    save_checkpoint(tmp_path / "rng.pt", {"format": FORMAT, "version": VERSION, "rng": rng_state()})
    first = (random.random(), np.random.normal(), np.random.rand(3).tolist(), torch.rand(3).tolist())
    set_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    again = (random.random(), np.random.normal(), np.random.rand(3).tolist(), torch.rand(3).tolist())
    assert first == again


def test_checkpoint_info(cfg):
    model = create_model(cfg)
    info = checkpoint_info(_payload(cfg, model))
    assert info["backbone"] == "resnet18"
    assert info["heads"] == {"age": ["<30", "30-59", ">=60"], "mask": ["wear", "incorrect", "not_wear"]}
    assert info["image_size"] == [32, 32] and info["mean"] == [0.5, 0.4, 0.3]
    assert info["epoch"] == 3 and info["metric"]["name"] == "val/composite/f1" and info["ema"] is False
