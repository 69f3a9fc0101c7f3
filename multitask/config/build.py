"""Typed building: plain data (a YAML mapping, a checkpoint's config) -> the schema's dataclasses, one key at a time.

    cfg = build_section(Config, raw, "", "configs/quickstart.yaml")

Unknown keys, wrong types and invalid choices raise `ConfigError` naming the key, the file and the nearest valid names;
cross-field rules are config/validate.py's.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from typing import Any, Literal, Union

from ..utils.errors import UserError
from .registered import choices


class ConfigError(UserError):
    """A bad config value; the message is one line for a person."""


def suggest(name: str, choices) -> str:
    """' (did you mean a, b?)' for the choices that look like `name`, else ''."""
    near = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.5)
    return f" (did you mean {', '.join(near)}?)" if near else ""


def build_section(cls, raw: Any, prefix: str, where: str):
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: {prefix.rstrip('.') or '<top>'}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {}
    for key, value in raw.items():
        if key not in names:
            raise ConfigError(f"{where}: unknown key '{prefix}{key}'{suggest(str(key), names)}; "
                              f"valid keys here: {', '.join(names)}")
        kwargs[key] = _coerce(hints[key], value, f"{prefix}{key}", where)
    return cls(**kwargs)


def _coerce(tp, value, key: str, where: str):
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return build_section(tp, value, key + ".", where)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(option, value, key, where)
            except ConfigError:
                pass
        raise ConfigError(f"{where}: {key}: {value!r} is not {_type_name(tp)}")
    if origin is Literal:
        if isinstance(value, bool):  # YAML 1.1 reads a bare off/on/no/yes as a boolean
            value = {False: "off", True: "on"}[value] if ({"off", "on"} & set(args)) else value
        valid = choices(key, args)   # the schema's names, then those plugins registered
        if value not in valid:
            names = [str(a) for a in valid]
            raise ConfigError(f"{where}: {key}: invalid choice {value!r}{suggest(str(value), names)}; "
                              f"choose from {', '.join(names)}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: {key}: expected a list, got {value!r}")
        return [_coerce(args[0], v, f"{key}[{i}]", where) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: {key}: expected a mapping, got {value!r}")
        if dataclasses.is_dataclass(args[1]):
            _check_entries(args[1], value, key, where)
        return {str(k): _coerce(args[1], v, f"{key}.{k}", where) for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):   # YAML reads .nan / .inf as floats; no setting means either
                raise ConfigError(f"{where}: {key}: {value} is not a finite number")
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is type(None):
        if value is None:
            return None
    raise ConfigError(f"{where}: {key}: expected {_type_name(tp)}, got {value!r}")


def _check_entries(cls, entries: dict, key: str, where: str) -> None:
    """Entries of a named mapping (heads) that lack a key no entry can do without (a head's classes): most often a
    key set on an entry that does not exist (`heads.newhead.weight=0.5`, a typo for a head), so the message names
    the entry and the known ones rather than the missing argument."""
    required = [f.name for f in dataclasses.fields(cls)
                if f.init and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    known = [str(k) for k, v in entries.items() if isinstance(v, dict) and all(r in v for r in required)]
    noun = "head" if key == "heads" else "entry"
    for name, entry in entries.items():
        missing = [r for r in required if r not in entry] if isinstance(entry, dict) else []
        if missing:
            raise ConfigError(f"{where}: {key}.{name}: unknown {noun} '{name}'{suggest(str(name), known)}; "
                              f"configured: {', '.join(known) or 'none'} "
                              f"(a new {noun} needs {key}.{name}.{missing[0]})")


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    if origin is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(tp)))
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string",
            type(None): "null"}.get(tp, getattr(tp, "__name__", str(tp)))
