"""Configuration: the typed schema, loading with `a.b=value` overrides, and `config show`.

    from multitask.config import load_config
    cfg = load_config("configs/quickstart.yaml", ["train.epochs=3"])
"""
from .build import ConfigError, suggest
from .load import from_dict, load_config, read_yaml, save_config, to_dict
from .registered import register_choice
from .schema import (
    AugmentConfig,
    Config,
    DataConfig,
    DistillConfig,
    EMAConfig,
    ModelConfig,
    SourceConfig,
    SynthConfig,
    TrackingConfig,
    TrainConfig,
    WandbConfig,
    default_heads,
)
from .validate import finalize

__all__ = ["AugmentConfig", "Config", "ConfigError", "DataConfig", "DistillConfig", "EMAConfig", "ModelConfig",
           "SourceConfig", "SynthConfig", "TrackingConfig", "TrainConfig", "WandbConfig", "default_heads", "finalize",
           "from_dict", "load_config", "read_yaml", "register_choice", "save_config", "suggest", "to_dict"]
