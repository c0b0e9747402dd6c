"""Configuration as a resource, so checks read the same validated YAML the definitions did."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from e2i_platform.settings import Settings, load_settings


class ConfigResource(dg.ConfigurableResource):
    """The config/ directory and environment the code location was built with."""

    config_dir: str
    env: str

    def settings(self) -> Settings:
        return load_settings(Path(self.config_dir), self.env)
