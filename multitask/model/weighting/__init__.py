"""Multi-task weightings by name (`train.loss_weighting`): each combines the heads' losses and owns the backward.

    static       Σ w_k L_k with the heads' configured weights
    uncertainty  learned homoscedastic-uncertainty weights (Kendall et al. 2018)
    dwa          Dynamic Weight Average: weights from the heads' loss descent rates (Liu et al. 2019)
    pcgrad       projects away conflicting components of the heads' trunk gradients (Yu et al. 2020)
    cagrad       conflict-averse trunk gradient near the mean gradient (Liu et al. 2021)
"""
from .base import GradContext, Weighting
from .cagrad import CAGrad
from .dwa import DynamicWeightAverage
from .pcgrad import PCGrad
from .static import Static
from .uncertainty import Uncertainty

WEIGHTINGS: dict[str, type[Weighting]] = {"static": Static, "uncertainty": Uncertainty,
                                          "dwa": DynamicWeightAverage, "pcgrad": PCGrad, "cagrad": CAGrad}

__all__ = ["WEIGHTINGS", "GradContext", "Weighting", "Static", "Uncertainty", "DynamicWeightAverage", "PCGrad",
           "CAGrad"]
