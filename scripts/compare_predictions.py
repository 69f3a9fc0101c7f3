"""`multitask compare` as a script: macro F1 with bootstrap intervals and paired differences of several runs or
predictions.csv files on the same images (multitask/analysis/compare.py does the work).

    python scripts/compare_predictions.py out/a/predictions.csv out/b/predictions.csv --names a,b
    python scripts/compare_predictions.py runs/quickstart/1 runs/quickstart_single18/1 --out out/compare
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))    # runnable from a fresh checkout, uninstalled

from multitask.cli import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(["compare", *sys.argv[1:]]))
