"""Typed configuration: YAML file -> dataclasses, `a.b.c=value` overrides, one-line errors for people.

    cfg = load_config("configs/quickstart.yaml", ["train.epochs=3", "heads.age.bins=[30,58]"])

Unknown keys, wrong types and invalid choices raise `ConfigError` naming the key, the file and the nearest valid names
(config/build.py); values that must agree with each other are checked by config/validate.py's `finalize`.
The resolved config (`to_dict(cfg)`) is what a run saves next to its checkpoints.
"""
from __future__ import annotations

import copy
import dataclasses
import re
from pathlib import Path
from typing import Any

import yaml

from ..utils.io import MAX_DEPTH, write_text
from .build import ConfigError, build_section
from .schema import Config, default_heads
from .validate import check_registered, finalize


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load that refuses a key given twice in one mapping (PyYAML keeps the last one without a word: two
    sources named alike would silently become one)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} appears twice in one mapping",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def compose_node(self, parent, index):
        """Refuses nesting deeper than any config needs, before PyYAML's recursive composer hits Python's recursion
        limit (a file nested 5,000 levels would end in a RecursionError)."""
        self.depth = getattr(self, "depth", 0) + 1
        try:
            if self.depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nested more than {MAX_DEPTH} levels deep; no config "
                                                  f"nests that deep", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


# PyYAML reads YAML 1.1, where a float needs a dot: `lr: 1e-3` would be the string '1e-3'. Everyone writes it (and
# YAML 1.2 reads it as a number), so exponent floats without a dot resolve as floats too, in every file and override
# this package reads as YAML (config files, `key=value` overrides, sweep spaces) through `read_yaml`.
EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$")
UniqueKeyLoader.add_implicit_resolver("tag:yaml.org,2002:float", EXPONENT_FLOAT, list("-+0123456789."))


def read_yaml(text: str) -> Any:
    """YAML text as data: safe types only, a key given twice refused, `1e-3` a float (see EXPONENT_FLOAT)."""
    return yaml.load(text, Loader=UniqueKeyLoader)


# --------------------------------------------------------------------------------------------- loading
def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    raw: dict[str, Any] = {}
    where = str(path) if path else "<defaults>"
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            raw = read_yaml(path.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError as err:
            raise ConfigError(f"{path}: not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start}); "
                              f"save the config as UTF-8") from None
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            line = f" line {mark.line + 1}" if mark else ""
            raise ConfigError(f"{path}{line}: not valid YAML ({getattr(err, 'problem', err)})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    if "heads" not in raw:  # overrides like heads.age.bins=... then refine the default heads
        raw["heads"] = {n: {k: v for k, v in dataclasses.asdict(h).items() if k != "name"}
                        for n, h in default_heads().items()}
    for item in overrides or []:
        _apply_override(raw, item)
    cfg = build_section(Config, raw, "", where)
    cfg.config_path = str(path) if path else None
    check_registered(finalize(cfg, where), where)
    return cfg


def _apply_override(raw: dict, item: str) -> None:
    if "=" not in item:
        raise ConfigError(f"override '{item}': expected key=value, e.g. train.epochs=3")
    key, _, text = item.partition("=")
    try:
        value = read_yaml(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    node = raw
    parts = key.strip().split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def to_dict(cfg) -> dict:
    """Plain data (YAML/JSON-safe) for saving next to a run and inside checkpoints."""
    return dataclasses.asdict(cfg)


def from_dict(raw: dict, where: str = "<checkpoint>", overrides: list[str] | None = None) -> Config:
    """A Config from plain data (a checkpoint's config), plus `a.b=value` overrides as on the command line.
    The caller's mapping is left as it was (a copy takes the edits)."""
    raw = {k: v for k, v in copy.deepcopy(raw).items() if k != "config_path"}
    for spec in (raw.get("heads") or {}).values():
        spec.pop("name", None)
    for item in overrides or ():
        _apply_override(raw, item)
    return finalize(build_section(Config, raw, "", where), where)


def save_config(cfg: Config, path: str | Path) -> None:
    """Written to a temp file and renamed: a kill mid-write leaves the previous config.yaml, never half of one."""
    write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False), what="config")
