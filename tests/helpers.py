"""Helpers shared by the tests (imported as `from helpers import ...`; pytest puts tests/ on the path)."""
from __future__ import annotations

from multitask.infer.predict import PredictOptions, run_predict


def predict(*, console=None, **options) -> dict:
    """`multitask predict` with these flags (PredictOptions fields)."""
    return run_predict(PredictOptions(**options), console=console)


def tiny_overrides(root, tmp_path, *extra, runs: str = "runs", cache: str = "cache") -> list[str]:
    """The overrides every training test starts from: the session's tiny synthetic set at `root`, 32x32 images,
    1 epoch, batch 16, no loader workers, no wandb, no progress bars, seed 0; `extra` overrides any of them."""
    return [f"data.root={root}", "data.synthesize_if_missing=false", "data.image_size=[32,32]", "data.num_workers=0",
            "data.n_folds=4", f"data.cache_dir={tmp_path / cache}", f"output_dir={tmp_path / runs}", "train.epochs=1",
            "train.batch_size=16", "tracking.wandb.mode=disabled", "tracking.progress=false", "seed=0", *extra]


def error_line(capsys) -> str:
    """The one line a failed command wrote to stderr, without its `error: `: exactly one line, no traceback."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0][len("error: "):]
