"""The validation metric keys, one rule for every module that writes, checks, ranks or plots them:

    val_key("composite/f1")                  # 'val/composite/f1'    the whole validation set
    val_key("composite/f1", "comp")          # 'val/comp/composite/f1' one source's own validation rows
    scored_sources(["comp", "realmask"])     # ['comp', 'realmask']  a run of one source has no per-source keys

A key is `<head>/f1`, `<head>/acc`, `<head>/f1_<class>`, `<head>/loss`, `composite/f1`, `mean/f1`, ...
"""
from __future__ import annotations

from collections.abc import Iterable

VAL = "val"


def val_key(key: str, source: str | None = None) -> str:
    """`val/<key>`, or `val/<source>/<key>` for one source's rows."""
    return f"{VAL}/{key}" if source is None else f"{VAL}/{source}/{key}"


def scored_sources(sources: Iterable[str]) -> list[str]:
    """The sources scored on their own: every one when a run has several; none when it has one (its scores are the
    whole set's)."""
    names = list(sources)
    return names if len(names) > 1 else []
