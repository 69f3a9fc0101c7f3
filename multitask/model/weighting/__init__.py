"""Multi-task weightings by name (`train.loss_weighting`): each combines the heads' losses and owns the backward.

    static       Σ w_k L_k with the heads' configured weights
    uncertainty  learned homoscedastic-uncertainty weights (Kendall et al. 2018)
    dwa          Dynamic Weight Average: weights from the heads' loss descent rates (Liu et al. 2019)
    pcgrad       projects away conflicting components of the heads' trunk gradients (Yu et al. 2020)
    cagrad       conflict-averse trunk gradient near the mean gradient (Liu et al. 2021)
"""
from ...config.registered import register_choice
from .base import GradContext, Weighting
from .cagrad import CAGrad
from .dwa import DynamicWeightAverage
from .pcgrad import PCGrad
from .static import Static
from .uncertainty import Uncertainty

WEIGHTINGS: dict[str, type[Weighting]] = {"static": Static, "uncertainty": Uncertainty,
                                          "dwa": DynamicWeightAverage, "pcgrad": PCGrad, "cagrad": CAGrad}


def register_weighting(name: str, cls: type[Weighting]) -> None:
    """Make `name` a choice of `train.loss_weighting`, validated as the built-in ones are.

    Args:
        name: the name configs use; a built-in name cannot be taken.
        cls: a Weighting subclass, built as `cls(heads=..., temperature=..., cagrad_c=...)` (take `**_` for what it
            does not use); override `weights`, `combine` or `backward` (base.py)."""
    if name in WEIGHTINGS:
        raise ValueError(f"register_weighting: '{name}' is taken")
    if not (isinstance(cls, type) and issubclass(cls, Weighting)):
        raise TypeError(f"register_weighting: {cls!r} is not a Weighting subclass")
    register_choice("train.loss_weighting", name)
    WEIGHTINGS[name] = cls

__all__ = ["WEIGHTINGS", "GradContext", "Weighting", "register_weighting", "Static", "Uncertainty",
           "DynamicWeightAverage", "PCGrad", "CAGrad"]
