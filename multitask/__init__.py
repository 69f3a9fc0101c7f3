"""multitask: multi-head multi-task image classifiers on a shared timm trunk."""

__version__ = "0.1.0"
