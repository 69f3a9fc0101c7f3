"""Analysis: the error report, paired comparisons of predictions, and class activation maps (explain).

    build_report(run_dir="runs/quickstart/1")       # RUN_DIR/report/index.html from its oof.csv
    run_compare(["runs/a/1", "runs/b/1"], out="compare")   # paired bootstrap differences of two runs' OOF
"""
from .compare import Comparison, compare, run_compare
from .explain import run_explain
from .report.build import build_report

__all__ = ["Comparison", "build_report", "compare", "run_compare", "run_explain"]
