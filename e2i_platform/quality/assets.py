"""Validated tables: typed copies of the raw tables, produced only through open gates."""

import warnings

import dagster as dg

from e2i_platform.contract import INPUT_TABLES, raw_asset_name
from e2i_platform.contract import table as contract_table
from e2i_platform.lib.gates import gated_asset
from e2i_platform.lib.table_metadata import contract_docs, table_metadata


def validated_table_asset(table: str) -> dg.AssetsDefinition:
    spec = contract_table(table)

    @gated_asset(
        name=table,
        group_name="quality",
        kinds={"pandas", "parquet"},
        io_manager_key="warehouse",
        ins={"raw": dg.AssetIn(raw_asset_name(table))},
        description=(
            f"{spec.description} Typed, validated `{table}`: the raw rows coerced by the "
            f"Pandera model that the `schema` gate of `{raw_asset_name(table)}` accepted. "
            "Refuses to run while that gate has not passed for the current raw data. "
            "Gated in turn by `expectations` (Great Expectations)"
            + (" and `references_resolve`." if spec.foreign_keys else ".")
        ),
    )
    def validated(context: dg.AssetExecutionContext, raw) -> dg.Output:
        from e2i_platform.contract.pandera_models import validate

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            typed = validate(table, raw)
        typed = typed[list(spec.column_names)]
        newest = typed[spec.event_time].max()
        return dg.Output(
            typed,
            metadata={
                **table_metadata(typed, contract_docs(table)),
                f"newest_{spec.event_time}": dg.MetadataValue.text(str(newest)),
            },
        )

    return validated


def validated_assets() -> list[dg.AssetsDefinition]:
    return [validated_table_asset(t) for t in INPUT_TABLES]
