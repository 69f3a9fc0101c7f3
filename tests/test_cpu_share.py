"""Trainings on one CPU share its cores: each process's torch threads follow how many are running."""
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from multitask.config import load_config
from multitask.train.callbacks import Callback
from multitask.train.run import fit
from multitask.utils import cpu_share
from multitask.utils.cpu_share import CpuShare, machine_cores
from multitask.utils.errors import UserError

CHILD = textwrap.dedent("""
    import sys
    from multitask.utils.cpu_share import CpuShare
    share = CpuShare(sys.argv[1], cores=4).join()
    print(share.rebalance(), flush=True)
    sys.stdin.read()
""")


@pytest.fixture()
def threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_processes_take_their_share_and_a_killed_one_gives_it_back(tmp_path, threads):
    (tmp_path / "999999999").write_text("")   # left by a dead process: nobody holds its lock
    me = CpuShare(tmp_path, cores=4).join()
    assert me.processes() == 1 and torch.get_num_threads() == 4
    assert not (tmp_path / "999999999").exists()
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "2"            # it saw this process and took half
        assert me.rebalance() == 2 and torch.get_num_threads() == 2
        child.send_signal(signal.SIGKILL)                        # no goodbye: the kernel drops its flock
        child.wait()
        assert me.rebalance() == 4 and torch.get_num_threads() == 4
        assert [p.name for p in tmp_path.iterdir()] == [str(os.getpid())]
    finally:
        child.kill()
        me.leave()
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_folder_leaves_the_threads_alone(tmp_path, threads):
    (tmp_path / "file").write_text("")
    torch.set_num_threads(1)
    share = CpuShare(tmp_path / "file" / "below", cores=4).join()
    assert share.fd is None and share.rebalance() == 1 and torch.get_num_threads() == 1


@pytest.mark.parametrize("value, message", [("0", "train.cpu_threads: 0 is too small; expected >= 1"),
                                            ("many", "train.cpu_threads: 'many' is not")])
def test_cpu_threads_is_auto_or_a_count(value, message):
    assert load_config(None, ["train.cpu_threads=3"]).train.cpu_threads == 3
    assert load_config(None, []).train.cpu_threads == "auto"
    with pytest.raises(UserError, match=message):
        load_config(None, [f"train.cpu_threads={value}"])


class Threads(Callback):
    def on_epoch_start(self, state, epoch):
        self.seen = torch.get_num_threads()


@pytest.mark.parametrize("deterministic", [False, True])
def test_a_cpu_training_beside_another_takes_half_the_cores_unless_deterministic(tiny_cfg, tmp_path, monkeypatch,
                                                                                threads, deterministic):
    monkeypatch.setattr(cpu_share, "default_folder", lambda: tmp_path / "share")
    (tmp_path / "share").mkdir()
    torch.set_num_threads(machine_cores())
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path / "share")], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)   # another training's registration
    try:
        child.stdout.readline()
        seen = Threads()
        fit(tiny_cfg(f"deterministic={str(deterministic).lower()}", "train.max_steps=1"), tmp_path / "run",
            callbacks=[seen])
    finally:
        child.kill()
        child.wait()
    assert seen.seen == (machine_cores() if deterministic else max(1, machine_cores() // 2))
    assert [p.name for p in (tmp_path / "share").iterdir()] == [str(child.pid)]   # this one left on its way out
