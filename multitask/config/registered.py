"""The names plugins register for a config key, beyond the schema's built-in ones (its `Literal`s, heads.LOSS_NAMES):
what `register_loss`, `register_weighting` and `register_sink` add.

    register_choice("train.loss_weighting", "mine")   # what model.weighting.register_weighting does
    choices("train.loss_weighting", ("static", ...))  # the built-in names, then the registered ones

The implementations live in the rooms that run them (model/, tracking/), and their registries are the source of the
names; this room holds only the names, so loading a config checks them without importing torch. tests/
test_registries.py holds the built-in names equal to the registries' keys.
"""
from __future__ import annotations

_REGISTERED: dict[str, list[str]] = {}   # config key ("loss" for every head's loss mix) -> plugin names


def register_choice(key: str, name: str) -> None:
    """Let `key` take `name` beside its built-in choices (a plugin registered it)."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{key}: a registered name must be a non-empty string, got {name!r}")
    names = _REGISTERED.setdefault(key, [])
    if name not in names:
        names.append(name)


def choices(key: str, builtin=()) -> list:
    """Every name `key` may take: the built-in ones, then those registered."""
    return [*builtin, *(n for n in _REGISTERED.get(key, ()) if n not in builtin)]
