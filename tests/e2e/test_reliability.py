"""Faults: kill -9 mid-epoch and mid-save then --resume, a full or unwritable disk, NaN losses, wandb that fails.

The kill tests run training in a child process started through a small wrapper script (written to tmp_path) that
patches the child only: it either parks at the N-th training forward pass until the test SIGKILLs it, or writes half
of the N-th checkpoint and SIGKILLs itself inside torch.save. Every child uses the same deterministic CPU config and
thread count, so a resumed run must end at exactly the uninterrupted run's final metrics.csv row and weights.
The training set is 84 images in batches of 16: 6 optimizer steps per epoch, a step checkpoint every 4 steps.
"""
import errno
import fcntl
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import REPO, error_line, tiny_overrides

from multitask.cli import main
from multitask.runs.checkpoint import load_checkpoint

CONFIG = str(REPO / "configs" / "quickstart.yaml")
KILL_TIMEOUT = 240   # seconds; 2 shared cores, and a child pays torch's import first

WRAPPER = '''
import io, os, signal, sys, time
from pathlib import Path

mode, n, marker, argv = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4:]
calls = [0]
if mode == "park-at-forward":      # wait, mid-epoch, for the test's SIGKILL
    from multitask.model.net import MultiHeadNet
    forward = MultiHeadNet.forward

    def counted(self, x):
        if self.training:
            calls[0] += 1
            if calls[0] == n:
                marker.write_text(str(os.getpid()))
                time.sleep(600)
        return forward(self, x)
    MultiHeadNet.forward = counted
elif mode == "die-in-save":        # the n-th checkpoint: half its bytes reach the disk, then SIGKILL
    import torch
    save = torch.save

    def half_then_die(obj, f, *args, **kwargs):
        calls[0] += 1
        if calls[0] < n:
            return save(obj, f, *args, **kwargs)
        buffer = io.BytesIO()
        save(obj, buffer, *args, **kwargs)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        f.flush()
        os.fsync(f.fileno())
        marker.write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    torch.save = half_then_die
from multitask.cli import main
sys.exit(main(argv))
'''


def _overrides(root, tmp_path, out: str, *extra) -> list[str]:
    return tiny_overrides(root, tmp_path, "deterministic=true", "train.amp=off", "train.epochs=2",
                          "train.save_every_steps=4", "tracking.tensorboard=false", *extra, runs=out)


class Child:
    """`multitask train` in its own process, through the wrapper, with stdout/stderr in files."""

    def __init__(self, tmp_path: Path, mode: str, n: int, args: list[str], tag: str):
        wrapper = tmp_path / "wrapper.py"
        wrapper.write_text(WRAPPER)
        self.marker = tmp_path / f"{tag}.marker"
        self.out, self.err = tmp_path / f"{tag}.out", tmp_path / f"{tag}.err"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MULTITASK_DEBUG": ""}
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen([sys.executable, str(wrapper), mode, str(n), str(self.marker), *args],
                                         stdout=out, stderr=err, env=env, cwd=tmp_path)

    def wait(self) -> int:
        try:
            return self.proc.wait(timeout=KILL_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise

    def wait_for_marker(self) -> None:
        deadline = time.monotonic() + KILL_TIMEOUT
        while not self.marker.exists():
            if self.proc.poll() is not None:
                pytest.fail(f"child ended (code {self.proc.returncode}) before the kill point:\n{self.log()}")
            if time.monotonic() > deadline:
                self.proc.kill()
                pytest.fail(f"child did not reach the kill point in {KILL_TIMEOUT}s:\n{self.log()}")
            time.sleep(0.2)

    def log(self) -> str:
        return self.out.read_text()[-3000:] + self.err.read_text()[-3000:]


def _run_dir(base: Path) -> Path:
    runs = list((base / "quickstart").iterdir())
    assert len(runs) == 1, runs
    return runs[0]


def _assert_same_end(run_dir: Path, reference: Path) -> None:
    got, want = pd.read_csv(run_dir / "metrics.csv"), pd.read_csv(reference / "metrics.csv")
    assert got["epoch"].tolist() == [1, 2]
    # every row, exactly: an epoch cut by the kill still reports the loss means of all its batches
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    a, b = load_checkpoint(run_dir / "last.pt"), load_checkpoint(reference / "last.pt")
    assert (a["epoch"], a["step"]) == (b["epoch"], b["step"]) == (2, 12)
    for key in b["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


@pytest.fixture(scope="module")
def reference(synth_root, tmp_path_factory):
    """The uninterrupted 2-epoch run, in a child process like the killed ones."""
    tmp = tmp_path_factory.mktemp("reference")
    child = Child(tmp, "plain", 0, ["train", "--config", CONFIG, *_overrides(synth_root, tmp, "runs")], "ref")
    assert child.wait() == 0, child.log()
    return _run_dir(tmp / "runs")


def _resumes_from_epoch_1_like_an_uninterrupted_run(run_dir: Path, reference, tmp_path: Path) -> None:
    """A run stopped in epoch 2: its last.pt is the last finished epoch, loadable, and a resume from it ends where
    the uninterrupted reference did."""
    last = load_checkpoint(run_dir / "last.pt")
    assert (last["epoch"], last["step"], last["state"]["batch_in_epoch"]) == (1, 6, 0)
    resumed = Child(tmp_path, "plain", 0, ["train", "--resume", str(run_dir)], "resumed")
    assert resumed.wait() == 0, resumed.log()
    assert "resumed from epoch 1 step 6" in resumed.out.read_text()
    _assert_same_end(run_dir, reference)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_ends_like_an_uninterrupted_run(reference, synth_root, tmp_path):
    args = ["train", "--config", CONFIG, *_overrides(synth_root, tmp_path, "runs")]
    child = Child(tmp_path, "park-at-forward", 8, args, "killed")   # 2nd batch of epoch 2
    child.wait_for_marker()
    os.kill(child.proc.pid, signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL
    _resumes_from_epoch_1_like_an_uninterrupted_run(_run_dir(tmp_path / "runs"), reference, tmp_path)


@pytest.mark.slow
def test_sigkill_inside_a_checkpoint_save_keeps_the_previous_one(reference, synth_root, tmp_path):
    # saves: step 4 last.pt (1), epoch 1 best.pt (2), epoch 1 last.pt (3) <- killed half-way through writing it
    args = ["train", "--config", CONFIG, *_overrides(synth_root, tmp_path, "runs")]
    child = Child(tmp_path, "die-in-save", 3, args, "killed")
    assert child.wait() == -signal.SIGKILL and child.marker.exists(), child.log()
    run_dir = _run_dir(tmp_path / "runs")
    half = list(run_dir.glob(".last.pt.*.tmp"))
    assert len(half) == 1 and half[0].stat().st_size > 0   # the torn write went to a temp file ...
    last = load_checkpoint(run_dir / "last.pt")            # ... and the previous checkpoint is whole
    assert (last["epoch"], last["step"], last["state"]["batch_in_epoch"]) == (0, 4, 4)

    resumed = Child(tmp_path, "plain", 0, ["train", "--resume", str(run_dir)], "resumed")
    assert resumed.wait() == 0, resumed.log()
    out = " ".join(resumed.out.read_text().split())
    assert "removed 1 half-written file(s) left by the interrupted run: .last.pt." in out
    assert "resumed from epoch 0 step 4 (batch 4 of the epoch)" in out
    assert not list(run_dir.glob(".*.tmp"))
    _assert_same_end(run_dir, reference)


@pytest.mark.slow
def test_sigterm_mid_epoch_ends_like_ctrl_c_and_the_run_resumes_like_an_uninterrupted_one(reference, synth_root,
                                                                                          tmp_path):
    """What a scheduler, `timeout` or `docker stop` sends: the same clean end as Ctrl-C (no .lock left, exit 143),
    with the last finished epoch's last.pt to resume from."""
    args = ["train", "--config", CONFIG, *_overrides(synth_root, tmp_path, "runs")]
    child = Child(tmp_path, "park-at-forward", 8, args, "terminated")   # 2nd batch of epoch 2
    child.wait_for_marker()
    os.kill(child.proc.pid, signal.SIGTERM)
    assert child.wait() == 128 + signal.SIGTERM, child.log()
    assert child.err.read_text() == "terminated\n"
    run_dir = _run_dir(tmp_path / "runs")
    assert not (run_dir / ".lock").exists() and not list(run_dir.glob(".*.tmp"))
    _resumes_from_epoch_1_like_an_uninterrupted_run(run_dir, reference, tmp_path)


@pytest.mark.slow
def test_sigterm_before_the_first_checkpoint_leaves_no_run_dir(synth_root, tmp_path):
    args = ["train", "--config", CONFIG, *_overrides(synth_root, tmp_path, "runs")]
    child = Child(tmp_path, "park-at-forward", 2, args, "terminated")   # nothing saved yet
    child.wait_for_marker()
    os.kill(child.proc.pid, signal.SIGTERM)
    assert child.wait() == 128 + signal.SIGTERM, child.log()
    assert child.err.read_text() == "terminated\n"
    assert not (tmp_path / "runs").exists()   # as after Ctrl-C: nothing half-made, not even runs/<name>/


# ------------------------------------------------------------------------------------------------ in-process faults
def _tiny(root, tmp_path, *extra) -> list[str]:
    return ["train", "--config", CONFIG, *_overrides(root, tmp_path, "runs", "train.epochs=1",
                                                     "train.save_every_steps=null", *extra)]


def _poison(monkeypatch, head: str, at_call: int) -> None:
    """The criterion returns NaN for `head` on its `at_call`-th training call (0-based = the optimizer step)."""
    from multitask.model.losses import MultiTaskCriterion

    head_losses, calls = MultiTaskCriterion.head_losses, [0]

    def poisoned(self, outputs, targets):
        losses = head_losses(self, outputs, targets)
        if torch.is_grad_enabled():
            if calls[0] == at_call:
                losses = {**losses, head: losses[head] + outputs[head].sum() * float("nan")}
            calls[0] += 1
        return losses
    monkeypatch.setattr(MultiTaskCriterion, "head_losses", poisoned)


def test_nan_loss_stops_naming_the_step_and_the_head(synth_root, tmp_path, monkeypatch, capsys):
    _poison(monkeypatch, "age", at_call=5)   # the epoch's last step: nothing trains on the NaN weights after it
    assert main(_tiny(synth_root, tmp_path)) == 2
    assert error_line(capsys) == ("non-finite loss at optimizer step 5 in head(s) age; lower train.lr, set "
                              "train.grad_clip, or check that head's labels and loss")
    run_dir = _run_dir(tmp_path / "runs")
    assert (run_dir / "config.yaml").is_file() and not list(run_dir.glob("*.pt"))   # kept to look at, nothing saved


def test_nan_weights_never_overwrite_a_good_checkpoint(synth_root, tmp_path, monkeypatch, capsys):
    # step checkpoint at step 2 (good), NaN at step 2's successor, the step-4 checkpoint would hold NaN weights
    _poison(monkeypatch, "gender", at_call=2)
    assert main(_tiny(synth_root, tmp_path, "train.save_every_steps=2")) == 2
    message = error_line(capsys)
    assert message.startswith("non-finite") and ("step 2" in message or "step 4" in message), message
    last = load_checkpoint(_run_dir(tmp_path / "runs") / "last.pt")
    assert last["step"] == 2 and all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())


@pytest.mark.parametrize("fault", ["disk full", "unwritable"])
def test_failed_save_is_one_clear_line_and_keeps_the_previous_checkpoint(fault, synth_root, tmp_path, monkeypatch,
                                                                        capsys):
    # step 3 saves last.pt; the epoch-end save of last.pt fails (step 6's own step save is left to the epoch end)
    real_replace, real_mkstemp, saves = os.replace, tempfile.mkstemp, []

    def replace(src, dst, *args, **kwargs):
        if str(dst).endswith("last.pt"):
            saves.append(dst)
            if len(saves) == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst, *args, **kwargs)

    def mkstemp(*args, prefix=None, **kwargs):
        if prefix and prefix.startswith(".last.pt."):
            saves.append(prefix)
            if len(saves) == 2:
                raise PermissionError(errno.EACCES, "Permission denied")
        return real_mkstemp(*args, prefix=prefix, **kwargs)

    if fault == "disk full":
        monkeypatch.setattr(os, "replace", replace)
    else:
        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    assert main(_tiny(synth_root, tmp_path, "train.save_every_steps=3")) == 2
    run_dir = _run_dir(tmp_path / "runs")
    cause = "No space left on device" if fault == "disk full" else "Permission denied"
    assert error_line(capsys) == (f"could not write checkpoint {run_dir / 'last.pt'}: {cause}; the previous checkpoint "
                              f"is intact")
    monkeypatch.undo()
    last = load_checkpoint(run_dir / "last.pt")
    assert (last["epoch"], last["step"]) == (0, 3)
    assert not list(run_dir.glob(".*.tmp"))
    assert main(["train", "--resume", str(run_dir)]) == 0   # and it resumes
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == 1


@pytest.mark.slow
def test_file_size_limit_while_saving_is_one_line(tmp_path):
    """torch's own writer past RLIMIT_FSIZE (what `ulimit -f` sets): it raises a RuntimeError without errno
    ('[enforce fail at inline_container.cc] unexpected pos'); the person gets one line, the previous file stays."""
    script = (
        "import resource, sys, torch\n"
        "from multitask.runs.checkpoint import FORMAT, VERSION, save_checkpoint\n"
        "from multitask.utils.errors import UserError\n"
        "save_checkpoint(sys.argv[1], {'format': FORMAT, 'version': VERSION, 'w': torch.ones(16)})\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (2**20, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))\n"
        "try:\n"
        "    save_checkpoint(sys.argv[1], {'format': FORMAT, 'version': VERSION, 'w': torch.zeros(2**20)})\n"
        "except UserError as err:\n"
        "    print(err)\n")
    path = tmp_path / "last.pt"
    done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=180,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == (f"could not write checkpoint {path}: File too large (the file-size limit, ulimit -f, is "
                           f"1048576 bytes); the previous checkpoint is intact\n")
    assert torch.equal(load_checkpoint(path)["w"], torch.ones(16))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_unwritable_output_dir_and_run_dir(synth_root, tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(_tiny(synth_root, tmp_path, f"output_dir={blocker / 'runs'}")) == 2
    where = blocker / "runs" / "quickstart"
    assert error_line(capsys).startswith(f"output_dir: cannot create {where}: Not a directory")

    assert main(_tiny(synth_root, tmp_path, "train.max_steps=1")) == 0
    run_dir = _run_dir(tmp_path / "runs")
    before = (run_dir / "last.pt").read_bytes()
    capsys.readouterr()
    if os.geteuid() == 0:   # root writes through permission bits: make the run dir refuse new files by hand
        real_mkstemp = tempfile.mkstemp

        def mkstemp(*args, dir=None, **kwargs):
            if dir is not None and Path(dir) == run_dir:
                raise PermissionError(errno.EACCES, "Permission denied")
            return real_mkstemp(*args, dir=dir, **kwargs)
        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    else:
        run_dir.chmod(0o500)
    try:
        assert main(["train", "--resume", str(run_dir), "train.max_steps=3"]) == 2
    finally:
        run_dir.chmod(0o755)
    assert error_line(capsys) == (f"run dir {run_dir} is not writable (Permission denied); make it writable or set "
                              f"output_dir to another folder")
    assert (run_dir / "last.pt").read_bytes() == before


def test_full_disk_while_building_the_image_cache(synth_root, tmp_path, monkeypatch, capsys):
    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "posix_fallocate", no_space)
    assert main(_tiny(synth_root, tmp_path)) == 2
    assert error_line(capsys) == (f"data.cache_dir: cannot write the image cache in {tmp_path / 'cache'} (No space "
                                  f"left on device; it needs 0.3 MiB); free space there, set data.cache_dir to a "
                                  f"writable folder, or data.cache=false")
    assert not [p for p in (tmp_path / "cache").iterdir()]
    assert not [p for p in (tmp_path / "runs").rglob("*") if p.is_file()]


def test_a_killed_cache_build_leaves_no_litter(synth_root, tmp_path, capsys):
    cache = tmp_path / "cache"
    cache.mkdir()
    abandoned = cache / "0123abcd.u8.x1y2.tmp"     # a build that was killed: nobody holds its lock
    abandoned.write_bytes(b"\0" * 4096)
    live = cache / "4567cdef.u8.z3w4.tmp"          # a build running right now in another process
    live.write_bytes(b"\0" * 4096)
    with open(live, "rb+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert main(_tiny(synth_root, tmp_path, "train.max_steps=1")) == 0
    assert not abandoned.exists() and live.exists()
    assert len(list(cache.glob("*.u8"))) == 1


@pytest.mark.slow
def test_kfold_resume_finishes_the_fold_that_was_killed(synth_root, tmp_path, capsys):
    args = _tiny(synth_root, tmp_path, "data.n_folds=2", "train.max_steps=1")
    assert main([*args, "--folds", "all"]) == 0
    parent = _run_dir(tmp_path / "runs")
    done = (parent / "fold0" / "last.pt").read_bytes()
    for name in ("best.pt", "last.pt", "oof.csv"):   # as if fold 1 was killed in its first epoch
        (parent / "fold1" / name).unlink()
    (parent / "oof.csv").unlink()
    capsys.readouterr()
    assert main(["train", "--resume", str(parent), "--folds", "all"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "nothing to train: this run already finished" in out   # fold 0
    assert (parent / "fold0" / "last.pt").read_bytes() == done
    assert load_checkpoint(parent / "fold1" / "last.pt")["epoch"] == 1
    assert sorted(pd.read_csv(parent / "oof.csv")["fold"].unique()) == [0, 1]


@pytest.mark.slow
def test_wandb_online_that_fails_falls_back_to_offline_and_trains(synth_root, tmp_path, monkeypatch, capsys):
    """The tracker's fallbacks are unit-tested in test_tracking.py; this is the engine keeping on with them."""
    import wandb

    real_init = wandb.init

    def init(*args, mode=None, **kwargs):
        if mode == "online":
            raise wandb.errors.CommError("Timed out while retrying: dial tcp: connection refused")
        return real_init(*args, mode=mode, **kwargs)

    monkeypatch.setattr(wandb, "init", init)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert main(_tiny(synth_root, tmp_path, "tracking.wandb.mode=online", "train.max_steps=1")) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "wandb online init failed (Timed out while retrying: dial tcp: connection refused); logging offline" in out
    run_dir = _run_dir(tmp_path / "runs")
    assert list(run_dir.glob("wandb/offline-run-*")) and (run_dir / "last.pt").is_file()


# ------------------------------------------------------------------------------------------------ run dir rules
def test_run_dir_lock_excludes_a_second_holder_and_follows_fold_dirs_to_their_parent(tmp_path):
    from multitask.runs.locks import RunDirLock
    from multitask.utils.errors import UserError

    parent = tmp_path / "kfold" / "1"
    (parent / "fold1").mkdir(parents=True)
    held = RunDirLock(parent).acquire()
    assert (parent / ".lock").read_text() == f"{os.getpid()}\n"
    with pytest.raises(UserError, match=rf"run dir {parent} is in use by another training process \(pid "
                                        rf"{os.getpid()}, lock"):
        RunDirLock(parent / "fold1").acquire()   # a fold is locked through its k-fold parent
    held.release()
    assert not (parent / ".lock").exists()
    RunDirLock(parent / "fold1").acquire().release()


def test_resume_overrides_rule(tiny_cfg, tmp_path):
    from multitask.config import to_dict
    from multitask.runs.resume import check_resume_overrides
    from multitask.utils.errors import UserError

    saved = to_dict(tiny_cfg())
    check_resume_overrides(saved, tiny_cfg("train.epochs=9", "tracking.csv=false", "data.num_workers=1"), tmp_path)
    for override, key in (("train.scheduler=step", "train.scheduler 'cosine' -> 'step'"),
                          ("heads.age.loss={ce: 1.0}", "heads.age.loss.ce None -> 1.0"),
                          ("seed=1", "seed 0 -> 1")):
        with pytest.raises(UserError, match=re.escape(f"--resume {tmp_path}: {key}")):
            check_resume_overrides(saved, tiny_cfg(override), tmp_path)
    onecycle = to_dict(tiny_cfg("train.scheduler=onecycle"))
    with pytest.raises(UserError, match="the onecycle schedule is fixed to the first run's length"):
        check_resume_overrides(onecycle, tiny_cfg("train.scheduler=onecycle", "train.epochs=2"), tmp_path)
    old = to_dict(tiny_cfg())
    del old["data"]["on_conflict"]   # a checkpoint from before a key existed: its default, not a change
    check_resume_overrides(old, tiny_cfg(), tmp_path)
