"""Ensemble + TTA inference; the same as `multitask predict` (`multitask predict --help` lists the
options).

    python scripts/infer_ensemble.py --ckpt runs/a/1 runs/b/1 --data data/mask/eval --out out/ --tta identity,hflip
"""
import sys

from multitask.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["predict", *sys.argv[1:]]))
