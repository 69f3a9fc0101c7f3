"""What a config read from a file someone else may have written (a checkpoint's, an export's) decides, and what not.

    cfg = embedded(cfg)      # a checkpoint's / export's config, as predict uses it

Such a config describes the model (backbone, heads, input size, normalisation, crop); it never says where the tool
writes. Paths to write come from the user (the command line, the user's own config file, the defaults): a crafted
file naming `data.cache_dir: /somewhere` must not make `predict` create that folder. So every key that names a place
to write (or makes the tool write one) is put back to its default here, the one place embedded configs pass.
"""
from __future__ import annotations

import dataclasses

from .schema import Config, DataConfig

# every config key that makes the tool write somewhere (grep the schema for paths when adding one): the run dirs
# (output_dir), the image and face-box caches (data.cache_dir) and the synthetic set written at data.root
WRITES = ("output_dir", "data.cache_dir", "data.synthesize_if_missing")


def embedded(cfg: Config) -> Config:
    """A copy of `cfg` (read from a checkpoint or an export) with every key of WRITES at its default."""
    defaults, data = DataConfig(), cfg.data
    data = dataclasses.replace(data, cache_dir=defaults.cache_dir, synthesize_if_missing=defaults.synthesize_if_missing)
    return dataclasses.replace(cfg, output_dir=Config.output_dir, data=data, config_path=None)
