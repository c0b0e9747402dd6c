"""The data contract: the one place that names tables, columns and rules (tables.py),
and the feature store's entities and views (feature_views.py)."""

from e2i_platform.contract.tables import (
    ENUMS,
    INPUT_TABLES,
    LABEL_DERIVED,
    TABLES,
    Column,
    ForeignKey,
    Table,
    raw_asset_name,
    table,
)

__all__ = [
    "ENUMS",
    "INPUT_TABLES",
    "LABEL_DERIVED",
    "TABLES",
    "Column",
    "ForeignKey",
    "Table",
    "raw_asset_name",
    "table",
]
