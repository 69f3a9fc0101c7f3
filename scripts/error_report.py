"""Per-head error analysis report; the same as `multitask report`.

    python scripts/error_report.py runs/quickstart/1
    python scripts/error_report.py --pred out/predictions.csv --gt data/synthetic/eval/gt.csv --out out/report
"""
import sys

from multitask.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["report", *sys.argv[1:]]))
