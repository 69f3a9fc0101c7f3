"""The config's error type: a bad value, one line for a person (a UserError: exit 2, no traceback)."""
from __future__ import annotations

from ..utils.errors import UserError


class ConfigError(UserError):
    """A bad config value; the message is one line for a person."""
