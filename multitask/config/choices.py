"""The names a config may choose, beyond what the schema's `Literal`s list: a library's own registry
(`train.optimizer`: any name timm knows) and the names plugins register (losses, weightings, sinks).

    check_optimizer("lamb", where="configs/x.yaml")   # ConfigError naming the nearest names when it is unknown
    register_choice("train.loss_weighting", "mine")   # what model.weighting.register_weighting does
    choices("train.loss_weighting", ("static", ...))  # the schema's names, then the registered ones

The implementations live in the rooms that run them (model/, tracking/); their registries are the source of the
names. This room holds only the names, so loading a config checks them without importing torch: the built-in names
are the schema's `Literal`s (tests/test_registries.py holds them equal to the registries' keys), and
`register_loss` / `register_weighting` / `register_sink` add theirs here.
"""
from __future__ import annotations

import difflib

from timm.optim import list_optimizers

from .errors import ConfigError

EXAMPLES = "adamw, sgd, momentum, lamb, lion, adan, nadamw"
_REGISTERED: dict[str, list[str]] = {}   # config key ("loss" for every head's loss mix) -> plugin names


def register_choice(key: str, name: str) -> None:
    """Let `key` take `name` beside its built-in choices (a plugin registered it)."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{key}: a registered name must be a non-empty string, got {name!r}")
    names = _REGISTERED.setdefault(key, [])
    if name not in names:
        names.append(name)


def choices(key: str, builtin=()) -> list[str]:
    """Every name `key` may take: the built-in ones, then those registered."""
    return [*builtin, *(n for n in _REGISTERED.get(key, ()) if n not in builtin)]


def check_optimizer(name: str, where: str = "<config>") -> None:
    """Refuse an optimizer name timm does not know, in one line (a ConfigError: a UserError for people)."""
    names = list_optimizers()
    if str(name).lower() in names:
        return
    near = difflib.get_close_matches(str(name).lower(), names, n=3, cutoff=0.5)
    hint = f" (did you mean {', '.join(near)}?)" if near else ""
    raise ConfigError(f"{where}: train.optimizer: invalid choice '{name}'{hint}; any name of "
                      f"timm.optim.list_optimizers() works ({EXAMPLES}, ...)")
