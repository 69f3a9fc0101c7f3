"""The one atomic writer, the one device picker and the one fold-folder naming, used by every module that needs them."""
from __future__ import annotations

import errno
import os

import pytest
import torch

from multitask.runs.run_dir import fold_dirs, fold_run_dir
from multitask.utils.devices import pick_device
from multitask.utils.errors import UserError
from multitask.utils.io import atomic_write


def test_atomic_write_replaces_the_file_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("old\n")
    with atomic_write(path, newline="") as f:
        f.write("new\n")
        assert path.read_text() == "old\n"   # readers see the old file until the end
    assert path.read_text() == "new\n" and os.listdir(tmp_path) == ["metrics.csv"]
    with atomic_write(tmp_path / "blob.bin", "wb") as f:
        f.write(b"\x00\x01")
    assert (tmp_path / "blob.bin").read_bytes() == b"\x00\x01"


@pytest.mark.parametrize("failure", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()])
def test_atomic_write_leaves_the_old_file_and_no_temp_file_when_the_writer_raises(tmp_path, failure):
    path = tmp_path / "config.yaml"
    path.write_text("old\n")
    with pytest.raises(type(failure)):
        with atomic_write(path) as f:
            f.write("half of the new")
            raise failure
    assert path.read_text() == "old\n" and os.listdir(tmp_path) == ["config.yaml"]


def test_atomic_write_removes_its_temp_file_when_the_rename_fails(tmp_path, monkeypatch):
    def refuse(src, dst):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError):
        with atomic_write(tmp_path / "predictions.csv") as f:
            f.write("image_id\n")
    assert os.listdir(tmp_path) == []


def test_one_device_picker_for_training_and_prediction(monkeypatch):
    assert pick_device("cpu") == torch.device("cpu") and pick_device(" CPU ") == torch.device("cpu")
    with pytest.raises(UserError, match=r"^train\.device: unknown device 'gpu'; use auto, cpu, cuda or cuda:N$"):
        pick_device("gpu", key="train.device")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto") == torch.device("cpu")
    with pytest.raises(UserError, match=r"^--device cuda:1: no GPU is visible; use cpu or auto$"):
        pick_device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert pick_device("auto", local_rank=1) == torch.device("cuda", 1)   # a bare cuda is this rank's GPU
    assert pick_device("cuda:0", local_rank=1) == torch.device("cuda", 0)
    with pytest.raises(UserError, match=r"^--device cuda:2: only 2 GPU\(s\) are visible"):
        pick_device("cuda:2")


def test_fold_folders_are_named_and_found_in_one_place(tmp_path):
    made = [fold_run_dir(tmp_path, k) for k in (10, 0, 2)]
    for folder in made:
        folder.mkdir()
    (tmp_path / "fold_notes").mkdir()
    (tmp_path / "fold3.txt").write_text("")
    assert fold_dirs(tmp_path) == [tmp_path / "fold0", tmp_path / "fold2", tmp_path / "fold10"]


def test_ddp_backend_follows_the_device_rule_of_training(monkeypatch):
    """train.device=CPU (any case) under torchrun picks gloo even on a machine that sees a GPU: NCCL would be given
    CPU tensors. The backend comes from pick_device, the rule training itself uses."""
    import torch.distributed as dist

    from multitask.utils.distributed import init_distributed

    for key, value in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    chosen, devices = [], []
    monkeypatch.setattr(torch.cuda, "set_device", devices.append)
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend: chosen.append(backend))
    for name in ("CPU", " cpu ", "Cpu", "CUDA", "auto"):
        info = init_distributed(name)
        assert (info.rank, info.local_rank, info.world_size) == (1, 1, 2)
    assert chosen == ["gloo", "gloo", "gloo", "nccl", "nccl"]
    assert devices == [torch.device("cuda", 1)] * 2   # each rank its own GPU
