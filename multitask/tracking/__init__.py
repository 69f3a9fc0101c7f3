"""Tracking: the Tracker and its sinks (TensorBoard, wandb, a caller's own), metrics.csv and the console.

    register_sink("mine", lambda run_dir, cfg: MySink())   # `tracking.sinks: [mine]` in a config
"""
from .sink import SINKS, Sink, register_sink
from .tracker import Tracker

__all__ = ["SINKS", "Sink", "Tracker", "register_sink"]
