"""Plugins: modules that register their own losses, weightings and tracking sinks (`register_loss`,
`register_weighting`, `register_sink`) before a command reads a config, so a config may choose them by name.

Two ways to name them, both read by every process that reads configs people write (the CLI, a sweep's workers):
- an installed package declares an entry point in the group `multitask.plugins` (its value is the module):
      [project.entry-points."multitask.plugins"]
      my_losses = "my_package.losses"
- MULTITASK_PLUGINS=my_package.losses,other_module (importable module names, comma-separated), for code that is not
  packaged.

    load_plugins()   # -> ["my_package.losses", ...]; once per process
"""
from __future__ import annotations

import importlib
import os
from importlib.metadata import entry_points

from .errors import UserError, one_line

GROUP = "multitask.plugins"
ENV = "MULTITASK_PLUGINS"
_LOADED: list[str] = []


def plugin_modules() -> list[tuple[str, str]]:
    """(module, where it was named) for every plugin: entry points first, then MULTITASK_PLUGINS."""
    named = [(ep.value.split(":")[0], f"entry point {ep.name!r} of group {GROUP}") for ep in entry_points(group=GROUP)]
    named += [(name.strip(), ENV) for name in os.environ.get(ENV, "").split(",") if name.strip()]
    return named


def load_plugins() -> list[str]:
    """Import every plugin module once; a module that fails to import is a UserError naming it and where it came
    from (a plugin's own bug is the person's to fix, not a crash of the package)."""
    for module, where in plugin_modules():
        if module in _LOADED:
            continue
        try:
            importlib.import_module(module)
        except Exception as err:
            raise UserError(f"plugin {module} (from {where}) failed to import: {one_line(err)}") from err
        _LOADED.append(module)
    return list(_LOADED)
