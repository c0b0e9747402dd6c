"""`dagster/row_count` and `dagster/column_schema` of a table asset's value.

Every asset that materializes a DataFrame adds `table_metadata(df, docs)` to its
output metadata. The schema is the frame's own columns and dtypes (read from
`df.dtypes`: O(columns), never a scan of the rows); `docs` adds what the platform
knows about a column, derived from where it is defined: the data contract
(`contract_docs`) or its feature views (`feature_docs`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import dagster as dg

from e2i_platform.contract import Column, Table
from e2i_platform.contract import table as contract_table
from e2i_platform.contract.feature_views import ENTITIES, TIMESTAMP_DESCRIPTIONS, VIEWS


@dataclass(frozen=True)
class ColumnDoc:
    description: str | None = None
    constraints: dg.TableColumnConstraints | None = None


def table_metadata(df, docs: Mapping[str, ColumnDoc] | None = None) -> dict[str, dg.MetadataValue]:
    """`dagster/row_count` and `dagster/column_schema` (name, dtype, and the column's
    description and constraints where `docs` has them) of the frame as written."""
    docs = docs or {}
    none = ColumnDoc()
    columns = []
    for name, dtype in df.dtypes.items():
        doc = docs.get(str(name), none)
        columns.append(
            dg.TableColumn(
                name=str(name),
                type=str(dtype),
                description=doc.description,
                constraints=doc.constraints,
            )
        )
    # The keys of Dagster's table metadata (its TableMetadataSet is not exported in 1.13).
    return {
        "dagster/row_count": dg.MetadataValue.int(len(df)),
        "dagster/column_schema": dg.MetadataValue.table_schema(dg.TableSchema(columns=columns)),
    }


def _number(value: float) -> str:
    return f"{value:g}"


def _rules(table: Table, column: Column) -> list[str]:
    """The contract's rules on one column, as short sentences."""
    rules = []
    if column.allowed is not None:
        rules.append("one of: " + ", ".join(str(v) for v in column.allowed))
    if column.min is not None and column.max is not None:
        rules.append(f"{_number(column.min)} <= {column.name} <= {_number(column.max)}")
    elif column.min is not None:
        rules.append(f"{column.name} >= {_number(column.min)}")
    elif column.max is not None:
        rules.append(f"{column.name} <= {_number(column.max)}")
    if column.pattern:
        rules.append(f"matches {column.pattern}")
    if column.luhn_prefix:
        rules.append(f"passes the Luhn check with prefix {column.luhn_prefix}")
    if column.name == table.primary_key:
        rules.append("primary key")
    if column.name in table.natural_key:
        rules.append("unique together: " + ", ".join(table.natural_key))
    for fk in table.foreign_keys:
        if fk.column == column.name:
            rules.append(f"references {fk.table}.{fk.ref_column}")
        if fk.not_before and fk.not_before[0] == column.name:
            rules.append(f">= {fk.table}.{fk.not_before[1]} of the referenced row")
    rules.extend(r.name for r in table.rules if column.name in r.columns)
    return rules


def contract_docs(table: str, constraints: bool = True) -> dict[str, ColumnDoc]:
    """Descriptions of a contract table's columns and, with `constraints`, the rules the
    contract sets on them (for values that passed their gates; a raw table has not)."""
    spec = contract_table(table)
    return {
        c.name: ColumnDoc(
            description=c.description,
            constraints=dg.TableColumnConstraints(
                nullable=c.nullable, unique=c.unique, other=_rules(spec, c)
            )
            if constraints
            else None,
        )
        for c in spec.columns
    }


def feature_docs(view: str, prefix: str = "") -> dict[str, ColumnDoc]:
    """Descriptions of a feature view's columns: its entity keys, timestamps and features
    (`prefix` + feature name: `<view>__` in the training set)."""
    spec = VIEWS[view]
    docs = {ENTITIES[e].join_key: ColumnDoc(ENTITIES[e].description) for e in spec.entities}
    if not prefix:
        docs |= {name: ColumnDoc(text) for name, text in TIMESTAMP_DESCRIPTIONS.items()}
    return docs | {
        f"{prefix}{f.name}": ColumnDoc(f"{spec.name}: {f.description}") for f in spec.features
    }
