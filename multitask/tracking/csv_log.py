"""metrics.csv: one row per epoch, every key a column; a resumed run keeps its history and rewrites it from its epoch.

    log = CsvLog(run_dir / METRICS)            # reads the rows an earlier process wrote
    log.add(epoch, {"val/mask/f1": 0.93})      # the whole file rewritten atomically: never half a CSV
    epoch, row = log.first_with("val/composite/f1", 0.71)
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

from ..utils.io import write_text


class CsvLog:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.rows: list[dict] = read_rows(self.path) if self.path.is_file() else []

    def add(self, epoch: int, values: dict[str, float]) -> None:
        self.rows = [r for r in self.rows if int(r["epoch"]) < epoch] + [{"epoch": epoch, **values}]
        columns = list(dict.fromkeys(k for row in self.rows for k in row))   # union of keys, first-seen order
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=columns)
        writer.writeheader()
        writer.writerows(self.rows)
        # disk full, run dir gone read-only: one line naming the file; the old file stays
        write_text(self.path, text.getvalue(), what="metrics table")

    def first_with(self, key: str, value: float) -> tuple[int | None, dict[str, float]]:
        """(epoch, metrics) of the first row where `key` has `value`; (None, {}) when no row has it."""
        row = next((r for r in self.rows if r.get(key) == value), None)
        if row is None:
            return None, {}
        return int(row["epoch"]), {k: v for k, v in row.items() if k != "epoch"}


def read_rows(path: Path) -> list[dict]:
    rows = []
    with open(path, newline="") as f:
        for raw in csv.DictReader(f):
            row = {k: float(v) for k, v in raw.items() if k and v not in (None, "")}
            if "epoch" in row:
                row["epoch"] = int(row["epoch"])
                rows.append(row)
    return rows
