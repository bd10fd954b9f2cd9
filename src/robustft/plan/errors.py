"""The planning layer's one error type."""

from __future__ import annotations


class ConfigError(ValueError):
    """A problem in config.yaml, raised before any job starts; the message names the key."""
