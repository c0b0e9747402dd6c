"""The `schema` gate on every raw table: Pandera, lazy, blocking."""

from datetime import UTC, datetime, timedelta

import dagster as dg

from e2i_platform.contract import INPUT_TABLES, raw_asset_name
from e2i_platform.lib.gate_checks import gate_check
from e2i_platform.lib.schema_gate import schema_gate
from e2i_platform.resources.config import ConfigResource


def schema_check(table: str) -> dg.AssetChecksDefinition:
    asset = raw_asset_name(table)

    @gate_check(
        asset=asset,
        name="schema",
        description=(
            f"Pandera contract of `{table}` (dtypes, required columns, ranges, enums, "
            "uniqueness, ID formats, NPI Luhn, cross-column rules), validated lazily; a value "
            "that typing would change, a non-finite number or a time later than now (plus "
            "the configured tolerance) fails. ERROR blocks the validated table and everything "
            "after it."
        ),
    )
    def schema(raw, e2i_config: ConfigResource) -> dg.AssetCheckResult:
        tolerance = e2i_config.settings().quality.future_tolerance_minutes
        return schema_gate(
            table,
            raw,
            asset,
            now=datetime.now(UTC).replace(tzinfo=None),
            future_tolerance=timedelta(minutes=tolerance),
        )

    return schema


def schema_checks() -> list[dg.AssetChecksDefinition]:
    return [schema_check(t) for t in INPUT_TABLES]
