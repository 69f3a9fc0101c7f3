"""Every list of names a config key takes, in one place: the schema's built-in names (its `Literal`s,
heads.LOSS_NAMES), then those plugins registered (registered.py), and `train.optimizer`, any name timm's optimizer
registry knows.

    check_optimizer("lamb", where="configs/x.yaml")   # ConfigError naming the nearest names when it is unknown
    choice_lists()["train.loss_weighting"]            # ["static", ..., "a_registered_one"]: what train --help lists
"""
from __future__ import annotations

import difflib
import typing

from timm.optim import list_optimizers

from ..heads import LOSS_NAMES, YEAR_LOSS_NAMES
from .build import ConfigError
from .registered import choices
from .schema import DistillConfig, TrainConfig

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



def loss_choices() -> list[str]:
    """Every name a head's loss mix may use: the built-in class and years losses, then the registered ones."""
    return choices("loss", (*LOSS_NAMES, *YEAR_LOSS_NAMES))


def sink_choices() -> list[str]:
    """Every name tracking.sinks may list: only registered ones (the built-in trackers have their own keys)."""
    return choices("tracking.sinks")


def choice_lists() -> dict[str, list[str]]:
    """{config key: the names it takes now}, plugins' included."""
    literal = lambda cls, key: list(typing.get_args(typing.get_type_hints(cls)[key]))  # noqa: E731
    return {"heads.<head>.loss": loss_choices(),
            "train.loss_weighting": choices("train.loss_weighting", literal(TrainConfig, "loss_weighting")),
            "tracking.sinks": sink_choices(),
            "train.optimizer": sorted(list_optimizers()),
            "train.scheduler": literal(TrainConfig, "scheduler"),
            "train.distill.merge": literal(DistillConfig, "merge")}
