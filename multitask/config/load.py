"""Typed configuration: YAML file -> dataclasses, `a.b.c=value` overrides, one-line errors for people.

    cfg = load_config("configs/quickstart.yaml", ["train.epochs=3", "heads.age.bins=[30,58]"])

Unknown keys, wrong types and invalid choices raise `ConfigError` naming the key, the file and the nearest valid names.
The resolved config (`to_dict(cfg)`) is what a run saves next to its checkpoints.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from ..heads import resolve_heads
from ..utils.io import write_text
from .choices import check_optimizer
from .errors import ConfigError
from .schema import AugmentConfig, Config, default_heads


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
    cfg = _build(Config, raw, "", where)
    cfg.config_path = str(path) if path else None
    return finalize(cfg, where)


def finalize(cfg: Config, where: str = "<config>") -> Config:
    """Cross-field checks that a single key's type cannot express."""
    try:
        cfg.heads = resolve_heads(cfg.heads)
    except ValueError as err:
        raise ConfigError(f"{where}: {err}") from None
    if cfg.train.heads is not None and not cfg.train.heads:
        raise ConfigError(f"{where}: train.heads: empty list; name at least one head ({', '.join(cfg.heads)}), "
                          f"or null for every head")
    if cfg.train.heads and len(set(cfg.train.heads)) != len(cfg.train.heads):
        raise ConfigError(f"{where}: train.heads: {cfg.train.heads} names a head twice")
    for key, names in (("train.heads", cfg.train.heads or []), ("composite", cfg.composite)):
        for n in names:
            if n not in cfg.heads:
                raise ConfigError(f"{where}: {key}: unknown head '{n}'{suggest(n, cfg.heads)}; "
                                  f"configured heads: {', '.join(cfg.heads)}")
    if not cfg.trained_heads():
        raise ConfigError(f"{where}: no head to train; configure `heads:` or pass --heads")
    size = cfg.data.image_size
    if len(size) != 2 or min(size) < 8 or max(size) > MAX_SIDE:
        raise ConfigError(f"{where}: data.image_size: expected [height, width], each in 8..{MAX_SIDE}, got {size}")
    if not 0 <= cfg.data.fold < cfg.data.n_folds:
        raise ConfigError(f"{where}: data.fold: {cfg.data.fold} not in 0..{cfg.data.n_folds - 1} (data.n_folds)")
    if cfg.data.source == "manifest" and not cfg.data.manifest and not cfg.data.sources:
        raise ConfigError(f"{where}: data.manifest: required when data.source is 'manifest'")
    for key, value, low in _lower_bounds(cfg):
        if value is not None and value < low:
            off = " or null (off)" if key in _OFF_WHEN_NULL else ""
            raise ConfigError(f"{where}: {key}: {value} is too small; expected >= {low}{off}")
    for key, value, rule in _float_ranges(cfg):
        if value is not None and not _RULES[rule](value):
            off = " or null (off)" if key in _OFF_WHEN_NULL else ""
            raise ConfigError(f"{where}: {key}: {value} is out of range; expected {rule}{off}")
    if cfg.data.on_bad_image == "skip" and not cfg.data.cache:
        raise ConfigError(f"{where}: data.on_bad_image=skip needs data.cache=true (bad images are found and left out "
                          f"while the cache is built); set data.cache=true or data.on_bad_image=error")
    check_optimizer(cfg.train.optimizer, where)
    check_sources(cfg, where)
    check_distill(cfg, where)
    return cfg


def check_distill(cfg: Config, where: str) -> None:
    """train.distill: views to run, and no teacher-only source (kind images) without a teacher."""
    d = cfg.train.distill
    if d.teachers and not d.tta:
        raise ConfigError(f"{where}: train.distill.tta: empty list; give the teacher's views (e.g. [identity, hflip])")
    images = [name for name, s in cfg.data.sources.items() if s.kind == "images"]
    if images and not d.teachers:
        raise ConfigError(f"{where}: data.sources.{images[0]}: a source of kind images labels no head and learns from "
                          f"a teacher alone; set train.distill.teachers (multitask distill --teacher ...)")


# a side beyond this is a typo or a crafted file: [30000, 30000] would take 2.5 GiB per decoded image
MAX_SIDE = 4096
RESERVED = {"composite", "mean", "loss", "lr"}   # metric keys: val/<source>/... must not read as another metric
SOURCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def check_sources(cfg: Config, where: str) -> None:
    """data.sources: names usable in metric keys, each source complete for its kind, known heads, shares that add up."""
    data, sources = cfg.data, cfg.data.sources
    if not sources:
        return
    if data.manifest or data.source != "competition":
        raise ConfigError(f"{where}: data.sources replaces data.source / data.manifest; give the manifest as a source "
                          f"(data.sources.<name>: {{kind: manifest, path: ...}})")
    lowered: dict[str, str] = {}
    for name, source in sources.items():
        key = f"data.sources.{name}"
        if not SOURCE_NAME.fullmatch(name) or name in RESERVED or name in cfg.heads:
            raise ConfigError(f"{where}: {key}: a source name is letters, digits, _ and - and no head's or metric's "
                              f"name ({', '.join(sorted(RESERVED | set(cfg.heads)))}); rename it")
        if name.lower() in lowered:
            raise ConfigError(f"{where}: {key}: named like data.sources.{lowered[name.lower()]}; give sources names "
                              f"that differ in more than case")
        lowered[name.lower()] = name
        if source.kind == "images" and (source.heads or source.label_fixes):
            raise ConfigError(f"{where}: {key}: a source of kind images is unlabelled: it takes no heads or "
                              f"label_fixes (and is never validated on)")
        need, other = ("root", "path") if source.kind == "competition" else ("path", "root")
        if not getattr(source, need):
            raise ConfigError(f"{where}: {key}.{need}: required for a {source.kind} source")
        if getattr(source, other) or (source.kind != "competition" and source.label_fixes):
            extra = other if getattr(source, other) else "label_fixes"
            raise ConfigError(f"{where}: {key}.{extra}: not a key of a {source.kind} source; a {source.kind} "
                              f"source reads {need}")
        for head in source.heads or []:
            if head not in cfg.heads:
                raise ConfigError(f"{where}: {key}.heads: unknown head '{head}'{suggest(head, cfg.heads)}; "
                                  f"configured heads: {', '.join(cfg.heads)}")
        if source.heads is not None and not source.heads:
            raise ConfigError(f"{where}: {key}.heads: empty list; name the heads it labels, or leave heads out")
        check_source_drawing(cfg, name, source, where)
    shares = [s.share for s in sources.values() if s.share is not None]
    total = sum(shares)
    if len(shares) == len(sources) and abs(total - 1) > 1e-6:
        raise ConfigError(f"{where}: data.sources: every source has a share and they add up to {total:g}; they "
                          f"must add up to 1 (or leave the main source's share out: it then gives each image once)")
    if len(shares) < len(sources) and total >= 1:
        raise ConfigError(f"{where}: data.sources: the shares add up to {total:g}, leaving nothing for the sources "
                          f"without one; keep their sum below 1")
    if not any(s.val and s.kind != "images" for s in sources.values()):
        raise ConfigError(f"{where}: data.sources: every source has val: false; at least one must be validated on")


def check_source_drawing(cfg: Config, name: str, source, where: str) -> None:
    """A source's `balance` (a head it labels, of classes) and `augment` (data.augment's keys and types)."""
    key = f"data.sources.{name}"
    labelled = [] if source.kind == "images" else list(cfg.heads) if source.heads is None else source.heads
    if source.balance is not None and source.balance not in labelled:
        raise ConfigError(f"{where}: {key}.balance: '{source.balance}' is not a head this source labels"
                          f"{suggest(source.balance, labelled)}; it labels: {', '.join(labelled) or 'none'}")
    if source.augment:   # unknown keys and wrong types, named in full
        _build(AugmentConfig, {**dataclasses.asdict(cfg.data.augment), **source.augment}, f"{key}.augment.", where)


_OFF_WHEN_NULL = {"train.save_every_steps", "train.max_steps", "train.early_stop", "data.limit", "train.grad_clip"}


def _lower_bounds(cfg: Config) -> list[tuple[str, float | None, float]]:
    """(key, value, smallest allowed) for values of the right type that would only fail later, mid-run."""
    t, d = cfg.train, cfg.data
    return [("train.epochs", t.epochs, 1), ("train.batch_size", t.batch_size, 1),
            ("train.accum_steps", t.accum_steps, 1), ("train.val_every", t.val_every, 1),
            ("train.save_every_steps", t.save_every_steps, 1), ("train.max_steps", t.max_steps, 1),
            ("train.early_stop", t.early_stop, 1), ("data.n_folds", d.n_folds, 2),
            ("train.plateau_patience", t.plateau_patience, 0), ("train.freeze_trunk_epochs", t.freeze_trunk_epochs, 0),
            ("data.num_workers", d.num_workers, 0), ("data.limit", d.limit, 1),
            ("train.cpu_threads", None if t.cpu_threads == "auto" else t.cpu_threads, 1)]


# every float is finite (checked when read); these must also lie in a range, or they fail mid-run (lr 0 divides by
# zero in the schedule) or train something nobody meant (a negative weight decay, a dropout of 1)
_RULES = {"> 0": lambda v: v > 0, ">= 0": lambda v: v >= 0, "in [0, 1]": lambda v: 0 <= v <= 1,
          "in [0, 1)": lambda v: 0 <= v < 1, "in (0, 1]": lambda v: 0 < v <= 1}


def _float_ranges(cfg: Config) -> list[tuple[str, float | None, str]]:
    """(key, value, rule) for floats with a valid range narrower than every finite number."""
    t, d, m = cfg.train, cfg.data, cfg.model
    checks = [("train.lr", t.lr, "> 0"), ("train.weight_decay", t.weight_decay, ">= 0"),
              ("train.momentum", t.momentum, "in [0, 1]"), ("train.min_lr", t.min_lr, ">= 0"),
              ("train.warmup_epochs", t.warmup_epochs, ">= 0"), ("train.gamma", t.gamma, "> 0"),
              ("train.grad_clip", t.grad_clip, "> 0"), ("train.dwa_temperature", t.dwa_temperature, "> 0"),
              ("train.cagrad_c", t.cagrad_c, ">= 0"), ("data.crop_margin", d.crop_margin, ">= 0"),
              ("train.mixup", t.mixup, ">= 0"), ("train.cutmix", t.cutmix, ">= 0"),
              ("train.mix_prob", t.mix_prob, "in [0, 1]"), ("train.ema.decay", t.ema.decay, "in [0, 1]"),
              ("model.drop_rate", m.drop_rate, "in [0, 1)"), ("model.drop_path_rate", m.drop_path_rate, "in [0, 1)"),
              ("train.distill.alpha", t.distill.alpha, "in [0, 1]"),
              ("train.distill.temperature", t.distill.temperature, "> 0")]
    for name in ("hflip", "shift_scale_rotate", "color_jitter", "coarse_dropout"):
        checks.append((f"data.augment.{name}", getattr(d.augment, name), "in [0, 1]"))
    checks += [(f"data.augment.crop_scale[{i}]", v, "in (0, 1]") for i, v in enumerate(d.augment.crop_scale)]
    checks += [(f"data.std[{i}]", v, "> 0") for i, v in enumerate(d.std if isinstance(d.std, list) else [])]
    checks += [("train.trunk_lr_scale", t.trunk_lr_scale, "in (0, 1]"),
               ("train.layer_decay", t.layer_decay, "in (0, 1]")]
    for name, source in d.sources.items():
        checks += [(f"data.sources.{name}.share", source.share, "in (0, 1]"),
                   (f"data.sources.{name}.crop_margin", source.crop_margin, ">= 0")]
    for name, h in cfg.heads.items():
        key = f"heads.{name}"
        checks += [(f"{key}.weight", h.weight, ">= 0"), (f"{key}.label_smoothing", h.label_smoothing, "in [0, 1)"),
                   (f"{key}.focal_gamma", h.focal_gamma, ">= 0"), (f"{key}.dropout", h.dropout, "in [0, 1)"),
                   (f"{key}.years_sigma", h.years_sigma, "> 0")]
        if isinstance(h.class_weights, list):
            checks += [(f"{key}.class_weights[{i}]", v, ">= 0") for i, v in enumerate(h.class_weights)]
    return checks


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


def suggest(name: str, choices) -> str:
    """' (did you mean a, b?)' for the choices that look like `name`, else ''."""
    near = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.5)
    return f" (did you mean {', '.join(near)}?)" if near else ""


def _build(cls, raw: Any, prefix: str, where: str):
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
        return _build(tp, value, key + ".", where)
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
        if value not in args:
            choices = [str(a) for a in args]
            raise ConfigError(f"{where}: {key}: invalid choice {value!r}{suggest(str(value), choices)}; "
                              f"choose from {', '.join(choices)}")
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
    return finalize(_build(Config, raw, "", where), where)


def save_config(cfg: Config, path: str | Path) -> None:
    """Written to a temp file and renamed: a kill mid-write leaves the previous config.yaml, never half of one."""
    write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False), what="config")
