"""Typed resources shared by the stages."""

from e2i_platform.resources.config import ConfigResource
from e2i_platform.resources.storage import WarehouseIOManager

__all__ = ["ConfigResource", "WarehouseIOManager"]
