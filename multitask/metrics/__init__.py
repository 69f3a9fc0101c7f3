"""Metrics: an epoch's accumulator, the statistics (the one macro F1, bootstrap intervals), the predictions table and
the confusion figure the report and the trackers share.

    scores = MetricAccumulator(heads=heads, composite=composite)   # update(outputs, targets) per batch; compute()
    f1 = macro_f1(y_true, y_pred, num_classes)
"""
from .accumulator import MetricAccumulator, metric_names
from .figures import confusion_figure
from .intervals import score_intervals
from .stats import class_scores, confusion_counts, head_scores, macro_f1
from .table import build_table, load_table, read_table

__all__ = ["MetricAccumulator", "build_table", "class_scores", "confusion_counts", "confusion_figure", "head_scores",
           "load_table", "macro_f1", "metric_names", "read_table", "score_intervals"]
