"""Trainings on one CPU share its cores: each process's torch threads follow how many are running."""
import os
import random
import signal
import stat
import subprocess
import sys
import textwrap
import warnings
from contextlib import contextmanager
from pathlib import Path

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
    with pytest.warns(RuntimeWarning, match="file/below cannot be used \\(Not a directory\\)"):
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
    (tmp_path / "share").mkdir(mode=0o700)
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


# ----------------------------------------------------------------------------------- a folder planted by someone else
# <tmp>/multitask-cpu-<uid>/ has a predictable name in a shared /tmp. Whatever is found there (the folder a link,
# another user's, open to all; a FIFO, a folder, a link or another user's file named like a pid), joining, counting
# and leaving end, without an error, and touch nothing outside the folder; anything this module did not make turns
# sharing off with one warning. Property-style: every kind of folder with seeded random sets of planted entries.
FOREIGN_UID = 54321
KEEP = {"1.jpg": b"\xff\xd8 a photo", "2024_report.csv": b"a,b\n1,2\n", "42": b"the answer", "notes.txt": b"notes"}
# entries named like a pid (beyond pid_max: never a live process): what each plants, and whether this module may
# take the folder as its own with it there (a stale file of its own: removed; one mode 000: as root it is one too)
ENTRIES = {
    "fifo": (lambda p: os.mkfifo(p, 0o600), False),
    "folder": (lambda p: p.mkdir(), False),
    "link to a kept file": (lambda p: p.symlink_to(p.parents[1] / "outside" / "42"), False),
    "dangling link": (lambda p: p.symlink_to(p.parents[1] / "nowhere"), False),
    "foreign file": (lambda p: (p.write_text(""), os.chown(p, FOREIGN_UID, FOREIGN_UID)), False),
    "stale file": (lambda p: p.write_text(""), True),
    "unreadable file": (lambda p: (p.write_text(""), p.chmod(0)), os.geteuid() == 0),
}
FOLDERS = ["missing", "private", "mode 0777", "link to a folder", "a file", "foreign owner"]


class Blocked(Exception):
    """Not an OSError (a TimeoutError is one): no `except OSError` on the way up takes it for a failed open."""


@contextmanager
def deadline(seconds: float):
    """Fails, instead of hanging the suite, when the body blocks (an open() of a FIFO waits for a writer); again
    every second after, should something on the way up block once more."""
    def expire(signum, frame):
        raise Blocked(f"still blocked after {seconds}s")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds, 1)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def snapshot(root: Path, skip: Path) -> dict:
    """Every name under root (links not followed) with its kind, owner, mode and bytes or target; `skip` left out."""
    seen = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [name for name in dirs if Path(folder) / name != skip]
        for name in [*dirs, *files]:
            path = Path(folder) / name
            if path == skip:
                continue
            st = os.lstat(path)
            body = (os.readlink(path) if stat.S_ISLNK(st.st_mode) else
                    path.read_bytes() if stat.S_ISREG(st.st_mode) else None)
            seen[str(path.relative_to(root))] = (stat.S_IFMT(st.st_mode), st.st_uid, stat.S_IMODE(st.st_mode), body)
    return seen


def plant(tmp_path: Path, kind: str, entries: list[str], monkeypatch) -> Path:
    """The share folder as `kind`, holding `entries` (in the linked-to folder when it is a link)."""
    outside, folder = tmp_path / "outside", tmp_path / "share"
    outside.mkdir()
    for name, data in KEEP.items():
        (outside / name).write_bytes(data)
    if kind == "a file":
        folder.write_bytes(b"not a folder")
        return folder
    if kind == "link to a folder":
        folder.symlink_to(outside)
    elif kind != "missing":
        folder.mkdir(mode=0o700)
        (folder / "notes.txt").write_text("not named like a pid: never touched")
    if kind == "mode 0777":
        folder.chmod(0o777)
    if kind == "foreign owner":   # as if another user had made it: this process is someone else than its owner
        monkeypatch.setattr(os, "geteuid", lambda: FOREIGN_UID)
    for k, name in enumerate(entries):
        ENTRIES[name][0](folder / str(999_999_000 + k))
    return folder


def cases(count: int = 4) -> list:
    """Each kind of folder with nothing planted, then `count` seeded random sets of entries (missing: none); and a
    private folder with only what a dead process leaves."""
    out = [pytest.param("private", ["stale file", "unreadable file", "stale file"], id="private:dead processes")]
    for kind in FOLDERS:
        rng = random.Random(kind)
        sets = [[]] if kind in ("missing", "a file") else [
            [], *(rng.sample(sorted(ENTRIES), rng.randint(1, len(ENTRIES))) for _ in range(count))]
        out += [pytest.param(kind, entries, id=f"{kind}:{'+'.join(entries) or 'empty'}") for entries in sets]
    return out


@pytest.mark.skipif(os.geteuid() != 0, reason="planting another user's file needs root")
@pytest.mark.parametrize("kind, entries", cases())
def test_whatever_is_planted_in_the_folder_sharing_ends_and_nothing_outside_is_touched(tmp_path, threads, monkeypatch,
                                                                                      kind, entries):
    folder = plant(tmp_path, kind, entries, monkeypatch)
    before = snapshot(tmp_path, skip=folder)
    torch.set_num_threads(1)
    with deadline(20), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        share = CpuShare(folder, cores=4).join()
        threads = share.rebalance()
        share.leave()
    monkeypatch.undo()   # the real uid again, for the checks
    said = [str(w.message) for w in caught if "thread sharing off" in str(w.message)]
    trusted = kind in ("missing", "private") and all(ENTRIES[name][1] for name in entries)
    assert (threads, said == []) == ((4, True) if trusted else (1, False)), said   # shared, or off and said ...
    assert len(said) <= 1 and not [w for w in caught if "thread sharing off" not in str(w.message)]   # ... once
    assert snapshot(tmp_path, skip=folder) == before   # the linked-to folder and its files alike, untouched
    if folder.is_dir() and not folder.is_symlink():   # what it did not make stays; its own file went
        left = sorted(p.name for p in folder.iterdir())
        odd = [str(999_999_000 + k) for k, name in enumerate(entries) if not ENTRIES[name][1]]
        assert set(odd) <= set(left) and str(os.getpid()) not in left
        assert ("notes.txt" in left) == (kind != "missing")
        if trusted:   # and the dead processes' files with it
            assert left == (["notes.txt"] if kind == "private" else [])


@pytest.mark.parametrize("kind, entries", [("link to a folder", []), ("private", ["fifo"]), ("private", ["folder"])],
                         ids=["link", "fifo", "folder"])
def test_a_training_starts_and_finishes_with_a_planted_share_folder(tiny_cfg, tmp_path, monkeypatch, threads, kind,
                                                                   entries):
    folder = plant(tmp_path, kind, entries, monkeypatch)
    monkeypatch.setattr(cpu_share, "default_folder", lambda: folder)
    before = snapshot(tmp_path, skip=folder)
    with deadline(120), pytest.warns(RuntimeWarning, match="thread sharing off: .*share (is a symbolic link|holds "
                                                          "999999000, which is not a regular file)"):
        metrics = fit(tiny_cfg("deterministic=false", "train.max_steps=1"), tmp_path / "run")
    assert metrics and (tmp_path / "run" / "last.pt").is_file()
    after = snapshot(tmp_path, skip=folder)
    assert {k: v for k, v in after.items() if k == "outside" or k.startswith("outside/")} == {
        k: v for k, v in before.items() if k == "outside" or k.startswith("outside/")}
