"""Numbers and tables as text for people: the report's pages and the trackers' text panels write them alike.

    fmt(0.71234) -> '0.712';  fmt(1234) -> '1,234';  fmt(None) -> '–'
    md_table(["head", "F1"], [["age", 0.71]]) -> ['| head | F1 |', '|---|---:|', '| age | 0.710 |']
"""
from __future__ import annotations

import math


def fmt(value) -> str:
    """Numbers for people: 3 decimals for fractions, thousands for counts, a dash for missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int) or (hasattr(value, "dtype") and getattr(value.dtype, "kind", "") in "iu"):
        return f"{int(value):,}"
    if isinstance(value, float) or hasattr(value, "dtype"):
        return f"{float(value):.3f}"
    return str(value)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) or hasattr(value, "dtype")


def md_cell(value) -> str:
    return fmt(value).replace("|", "\\|").replace("\n", " ")


def md_table(columns, rows) -> list[str]:
    """A Markdown table's lines; number columns right-aligned, cells as `fmt` writes them, | escaped."""
    lines = ["| " + " | ".join(md_cell(c) for c in columns) + " |",
             "|" + "|".join("---:" if rows and is_number(rows[0][i]) else "---" for i in range(len(columns))) + "|"]
    lines += ["| " + " | ".join(md_cell(v) for v in row) + " |" for row in rows]
    return lines
