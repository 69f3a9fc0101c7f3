"""`multitask config show`: the fully resolved config as YAML, every key with its value, and its default.

    multitask config show --config configs/quickstart.yaml train.epochs=3 > shown.yaml
    multitask train --config shown.yaml       # the same Config, key for key

The layout is that of configs/*.yaml: one line per key, sections indented, each value in YAML flow style. Where a
value differs from the built-in default, a trailing comment `# default: <value>` gives the default. Comments are
YAML comments, so the text loads back unchanged. Inside `heads.<name>` (and `data.sources.<name>`) the default is what
an entry gets when it leaves the key out. `config_path` (where a config was read from) is left out: it is not a
setting.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import yaml

from ..heads import HeadSpec
from . import Config

SKIP = {(Config, "config_path"), (HeadSpec, "name")}
COMMENT_COLUMN = 56   # comments line up here; a longer line gets its comment two spaces after it


def show_config(cfg: Config, *, source: str = "") -> str:
    header = ["# multitask config show" + (f": {source}" if source else ""),
              "# every key with its value; `# default: X` marks a value that differs from the built-in default"]
    rows = _rows(cfg, Config(), 0)
    width = min(COMMENT_COLUMN, max(len(text) for text, _ in rows) + 2)
    lines = [text if note is None else f"{text.ljust(width - 2)}  # default: {note}" for text, note in rows]
    return "\n".join(header + lines) + "\n"


def _rows(obj, default, depth: int) -> list[tuple[str, str | None]]:
    """(line, default or None) for each field of a dataclass; sections and heads recurse."""
    rows = []
    pad = "  " * depth
    for f in dataclasses.fields(obj):
        if not f.init or (type(obj), f.name) in SKIP:
            continue
        value, fallback = getattr(obj, f.name), getattr(default, f.name)
        if dataclasses.is_dataclass(value):
            rows.append((f"{pad}{f.name}:", None))
            rows += _rows(value, fallback, depth + 1)
        elif isinstance(value, dict) and value and all(dataclasses.is_dataclass(v) for v in value.values()):
            # heads, data.sources: an entry per name; the default of each key is what an entry leaving it out gets
            shown = None if list(value) == list(fallback) else ", ".join(fallback) or "{}"
            rows.append((f"{pad}{f.name}:", shown))
            for name, entry in value.items():
                rows.append((f"{pad}  {flow_yaml(name)}:", None))
                blank = HeadSpec(classes=entry.classes) if isinstance(entry, HeadSpec) else type(entry)()
                rows += _rows(entry, blank, depth + 2)
        else:
            rows.append((f"{pad}{f.name}: {flow_yaml(value)}", None if value == fallback else flow_yaml(fallback)))
    return rows


def flow_yaml(value: Any) -> str:
    """One value on one line, as YAML reads it back (quotes where YAML would misread: 'off', '<30', '')."""
    style = '"' if isinstance(value, str) and "\n" in value else None
    text = yaml.safe_dump(value, default_flow_style=True, default_style=style, width=10**9, sort_keys=False)
    return text.strip().removesuffix("\n...").strip()
