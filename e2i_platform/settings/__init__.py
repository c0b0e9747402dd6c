"""Configuration: typed models of config/*.yaml and their loader."""

from e2i_platform.settings.loader import ConfigError, Settings, load, load_settings

__all__ = ["ConfigError", "Settings", "load", "load_settings"]
