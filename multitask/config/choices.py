"""Choices whose owner is a library: `train.optimizer` is any name timm's optimizer registry knows.

    check_optimizer("lamb", where="configs/x.yaml")   # ConfigError naming the nearest names when it is unknown
"""
from __future__ import annotations

import difflib

from timm.optim import list_optimizers

from .build import ConfigError

EXAMPLES = "adamw, sgd, momentum, lamb, lion, adan, nadamw"


def check_optimizer(name: str, where: str = "<config>") -> None:
    """Refuse an optimizer name timm does not know, in one line (a ConfigError: a UserError for people)."""
    names = list_optimizers()
    if str(name).lower() in names:
        return
    near = difflib.get_close_matches(str(name).lower(), names, n=3, cutoff=0.5)
    hint = f" (did you mean {', '.join(near)}?)" if near else ""
    raise ConfigError(f"{where}: train.optimizer: invalid choice '{name}'{hint}; any name of "
                      f"timm.optim.list_optimizers() works ({EXAMPLES}, ...)")

