"""The data contract (see tables.py): the one place that names tables, columns and rules."""

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
