"""Tracking: the Tracker and its sinks (TensorBoard, wandb), metrics.csv and the console."""
