"""The model: a timm trunk with one head per task, the per-head losses and the multi-task weightings.

    register_loss("mine", my_loss)            # heads.<head>.loss: {mine: 1.0}
    register_weighting("mine", MyWeighting)   # train.loss_weighting: mine
"""
from .losses import LOSSES, HeadLoss, MultiTaskCriterion, register_loss
from .net import MultiHeadNet, create_model
from .weighting import WEIGHTINGS, GradContext, Weighting, register_weighting

__all__ = ["LOSSES", "WEIGHTINGS", "GradContext", "HeadLoss", "MultiHeadNet", "MultiTaskCriterion", "Weighting",
           "create_model", "register_loss", "register_weighting"]
