"""What the code under test hands wandb, recorded at its public seam: the run object `wandb.init` returns.

conftest.py installs the recorder for the whole session; the real (offline) runs still write their files.

    logged(run_dir)    # [(step or None, payload), ...]: every run.log call of the runs made in run_dir, in order
"""
from __future__ import annotations

from pathlib import Path

RECORDED: dict[Path, list[tuple[int | None, dict]]] = {}


def install(monkeypatch) -> None:
    import wandb

    real_init = wandb.init

    def init(*args, **kwargs):
        run = real_init(*args, **kwargs)
        calls = RECORDED.setdefault(Path(kwargs.get("dir") or ".").resolve(), [])
        real_log = run.log

        def log(data, step=None, **more):
            calls.append((step, dict(data)))
            return real_log(data, step=step, **more)

        run.log = log
        return run

    monkeypatch.setattr(wandb, "init", init)


def logged(run_dir) -> list[tuple[int | None, dict]]:
    return RECORDED.get(Path(run_dir).resolve(), [])
