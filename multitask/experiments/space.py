"""Search spaces for `multitask sweep`: a YAML file of normal config keys and the values each may take.

    params:
      train.lr:            {low: 1.0e-4, high: 1.0e-2, log: true}       # float (log scale)
      train.warmup_epochs: {type: float, low: 0, high: 2, step: 0.5}    # float on a grid
      train.step_size:     {low: 2, high: 8, when: {train.scheduler: step}}   # int (both ends integers)
      train.scheduler:     {choices: [cosine, step]}                    # categorical
      heads.age.loss:      {choices: {ce: {ce: 1.0}, focal: {focal: 1.0}}}   # named choices of any YAML value
      heads.age.focal_gamma: {low: 0.5, high: 4.0, when: {heads.age.loss: focal}}
    fixed:                 # plain overrides for every trial (optional)
      train.epochs: 6
    first:                 # points tried before the sampler's own (optional): a known recipe, a rival to beat
      - {train.scheduler: cosine, train.lr: 2.0e-3}     # keys left out are sampled

A key is sampled in file order; `when` makes it conditional on an earlier categorical key's choice (one name or a
list of names). A choice that is a list or mapping (`heads.age.bins: {choices: [[30, 58], [30, 60]]}`) is named by
its YAML text. `first` points are queued when the study is new (Optuna's enqueue_trial): with a budget of a few
trials, the sampler's random start would otherwise spend them far from the recipes worth comparing. `check_space`
tries every key at its ends and every choice against the base config before any trial runs, so a typo stops the
sweep in a second with one line that names the key.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

import yaml

from ..config import read_yaml
from ..config.show import flow_yaml
from ..utils.errors import UserError

NUMERIC_KEYS = {"type", "low", "high", "log", "step", "when"}
Built = TypeVar("Built")


@dataclass
class Param:
    key: str
    kind: str                                   # float | int | categorical
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: dict[str, Any] = field(default_factory=dict)   # name -> config value
    when: dict[str, list[str]] = field(default_factory=dict)

    def sample(self, trial) -> tuple[Any, Any]:
        """(what optuna stores, the config value)."""
        if self.kind == "categorical":
            name = trial.suggest_categorical(self.key, list(self.choices))
            return name, self.choices[name]
        if self.kind == "int":
            value = trial.suggest_int(self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        else:
            value = trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)
        return value, value

    def probe_values(self) -> list[Any]:
        """Values that show whether the key and its type suit the config: both ends, or every choice."""
        if self.kind == "categorical":
            return list(self.choices.values())
        cast = int if self.kind == "int" else float
        return [cast(self.low), cast(self.high)]


@dataclass
class Space:
    path: str
    params: list[Param]
    fixed: dict[str, Any]
    first: list[dict[str, Any]] = field(default_factory=list)   # {key: what optuna stores (a choice's name)}

    def sample(self, trial) -> dict[str, Any]:
        """{key: config value} of the keys this trial uses (a conditional key only when its condition holds)."""
        chosen: dict[str, Any] = {}
        labels: dict[str, Any] = {}
        for p in self.params:
            if all(labels.get(parent) in names for parent, names in p.when.items()):
                labels[p.key], chosen[p.key] = p.sample(trial)
        return chosen

    def overrides(self, values: dict[str, Any]) -> list[str]:
        return [f"{k}={flow_yaml(v)}" for k, v in {**self.fixed, **values}.items()]


def load_space(path: str | Path) -> Space:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--space {path}: file not found")
    try:
        raw = read_yaml(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise UserError(f"--space {path}: not valid YAML ({getattr(err, 'problem', err)})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("params"), dict) or not raw["params"]:
        raise UserError(f"{path}: expected a mapping with `params:` (config key -> {{low, high}} or {{choices}})")
    unknown = set(raw) - {"params", "fixed", "first"}
    if unknown:
        raise UserError(f"{path}: unknown top-level key(s) {', '.join(sorted(unknown))}; expected params, fixed, "
                        f"first")
    fixed = raw.get("fixed") or {}
    if not isinstance(fixed, dict):
        raise UserError(f"{path}: fixed: expected a mapping of config key -> value")
    params: list[Param] = []
    for key, spec in raw["params"].items():
        params.append(_param(path, str(key), spec, {p.key: p for p in params}))
    return Space(path=str(path), params=params, fixed=fixed, first=_first(path, raw.get("first"), params))


def _first(path: Path, raw: Any, params: list[Param]) -> list[dict[str, Any]]:
    """The `first:` points as optuna stores them: a categorical key by its choice's name, a number in its range."""
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(point, dict) and point for point in raw):
        raise UserError(f"{path}: first: expected a list of mappings (config key -> value)")
    by_key = {p.key: p for p in params}
    points = []
    for i, point in enumerate(raw):
        out = {}
        for key, value in point.items():
            where, p = f"{path}: first[{i}]: {key}", by_key.get(str(key))
            if p is None:
                raise UserError(f"{where}: not a key of params ({', '.join(by_key)})")
            if p.kind == "categorical":
                name = next((n for n, v in p.choices.items() if n == _label(value) or v == value), None)
                if name is None:
                    raise UserError(f"{where}: {flow_yaml(value)} is not one of its choices ({', '.join(p.choices)})")
                out[p.key] = name
                continue
            number = _number(where, "value", value)
            if not p.low <= number <= p.high:
                raise UserError(f"{where}: {number:g} is outside its range [{p.low:g}, {p.high:g}]")
            out[p.key] = int(number) if p.kind == "int" else number
        points.append(out)
    return points


def _param(path: Path, key: str, spec: Any, earlier: dict[str, Param]) -> Param:
    where = f"{path}: {key}"
    if not isinstance(spec, dict):
        raise UserError(f"{where}: expected {{low, high[, log, step, type]}} or {{choices: [...]}}, got {spec!r}")
    when = _when(where, spec.get("when"), earlier)
    if "choices" in spec:
        extra = set(spec) - {"choices", "when", "type"}
        if extra:
            raise UserError(f"{where}: a categorical key takes choices (and when), not {', '.join(sorted(extra))}")
        choices = spec["choices"]
        if isinstance(choices, list):
            choices = {_label(v): v for v in choices}
        if not isinstance(choices, dict) or not choices:
            raise UserError(f"{where}: choices: expected a non-empty list or mapping of name -> value")
        return Param(key=key, kind="categorical", choices={str(k): v for k, v in choices.items()}, when=when)
    extra = set(spec) - NUMERIC_KEYS
    if extra or "low" not in spec or "high" not in spec:
        raise UserError(f"{where}: expected low and high (and optionally log, step, type, when) or choices; got "
                        f"{', '.join(sorted(spec))}")
    low, high, step = (_number(where, name, spec.get(name)) for name in ("low", "high", "step"))
    kind = spec.get("type") or ("int" if all(isinstance(spec.get(n), int) and not isinstance(spec.get(n), bool)
                                             for n in ("low", "high")) else "float")
    if kind not in ("int", "float"):
        raise UserError(f"{where}: type: expected int or float, got {kind!r}")
    log = bool(spec.get("log", False))
    if not low < high:
        raise UserError(f"{where}: low ({low}) must be below high ({high})")
    if log and low <= 0:
        raise UserError(f"{where}: log scale needs low > 0, got {low}")
    if log and step is not None:
        raise UserError(f"{where}: give log or step, not both")
    if kind == "int" and not all(float(v).is_integer() for v in (low, high, step or 1)):
        raise UserError(f"{where}: an int key needs integer low/high/step")
    if step is not None and step <= 0:
        raise UserError(f"{where}: step must be > 0, got {step}")
    return Param(key=key, kind=kind, low=low, high=high, log=log, step=step, when=when)


def _when(where: str, raw: Any, earlier: dict[str, Param]) -> dict[str, list[str]]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not raw:
        raise UserError(f"{where}: when: expected {{earlier.categorical.key: choice or [choices]}}, got {raw!r}")
    out = {}
    for parent, names in raw.items():
        p = earlier.get(str(parent))
        if p is None or p.kind != "categorical":
            raise UserError(f"{where}: when: '{parent}' must be a categorical key listed above this one")
        names = [_label(n) for n in (names if isinstance(names, list) else [names])]
        bad = [n for n in names if n not in p.choices]
        if bad:
            raise UserError(f"{where}: when: {parent} has no choice {bad[0]!r}; its choices: {', '.join(p.choices)}")
        out[str(parent)] = names
    return out


def _label(value: Any) -> str:
    return value if isinstance(value, str) else flow_yaml(value)


def _number(where: str, name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):   # read_yaml reads 1e-4 as a number already
        raise UserError(f"{where}: {name}: expected a number, got {value!r}")
    if not math.isfinite(value):
        raise UserError(f"{where}: {name}: expected a finite number, got {value!r}")
    return float(value)


def check_space(space: Space, build: Callable[[list[str]], Built]) -> Built:
    """Build the config with every probe value of every key alone (and the fixed values): the first bad key stops
    the sweep with one line naming it. `build(overrides)` raises UserError for a config that cannot train. Returns
    the build with the fixed values alone: what every trial shares."""
    try:
        base = build(space.overrides({}))
    except UserError as err:
        raise UserError(f"{space.path}: fixed: {err}") from None
    for p in space.params:
        for value in p.probe_values():
            try:
                build(space.overrides({p.key: value}))
            except UserError as err:
                raise UserError(f"{space.path}: {p.key}={flow_yaml(value)}: {err}") from None
    return base
