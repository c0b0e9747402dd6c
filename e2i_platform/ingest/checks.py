"""The `schema` gate on every raw table: Pandera, lazy, blocking."""

import dagster as dg

from e2i_platform.contract import INPUT_TABLES, raw_asset_name
from e2i_platform.lib.schema_gate import schema_gate


def schema_check(table: str) -> dg.AssetChecksDefinition:
    asset = raw_asset_name(table)

    @dg.asset_check(
        asset=asset,
        name="schema",
        blocking=True,
        description=(
            f"Pandera contract of `{table}` (dtypes, required columns, ranges, enums, "
            "uniqueness, ID formats, NPI Luhn, cross-column rules), validated lazily. "
            "ERROR blocks the validated table and everything after it."
        ),
    )
    def schema(raw) -> dg.AssetCheckResult:
        return schema_gate(table, raw, asset)

    return schema


def schema_checks() -> list[dg.AssetChecksDefinition]:
    return [schema_check(t) for t in INPUT_TABLES]
