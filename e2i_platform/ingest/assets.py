"""Raw tables: one asset per contract input table, landed or generated, untyped."""

import dagster as dg

from e2i_platform.contract import INPUT_TABLES, raw_asset_name
from e2i_platform.contract import table as contract_table
from e2i_platform.ingest.sources import SourceResource
from e2i_platform.lib import step_cost


def _column_schema(df) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[dg.TableColumn(name=str(c), type=str(t)) for c, t in df.dtypes.items()]
    )


def raw_table_asset(table: str) -> dg.AssetsDefinition:
    spec = contract_table(table)

    @dg.asset(
        name=raw_asset_name(table),
        group_name="ingest",
        kinds={"pandas", "parquet"},
        io_manager_key="warehouse",
        description=(
            f"{spec.description} Raw rows of `{table}` exactly as they arrived: from "
            f"`$E2I_HOME/landing/{table}.parquet|.csv` when present, otherwise from the "
            "deterministic generator. Not yet typed or validated: the blocking `schema` "
            "check (Pandera) gates everything downstream."
        ),
    )
    def raw(context: dg.AssetExecutionContext, source: SourceResource) -> dg.Output:
        step_cost.start_step(context)
        loaded = source.load(table)
        df = loaded.frame
        context.log.info(f"{table}: {len(df)} rows from {loaded.source['kind']}")
        return dg.Output(
            df,
            data_version=dg.DataVersion(loaded.version),
            metadata={
                "source": dg.MetadataValue.json(loaded.source),
                "source_kind": dg.MetadataValue.text(loaded.source["kind"]),
                "dagster/column_schema": _column_schema(df),
            },
        )

    return raw


def raw_assets() -> list[dg.AssetsDefinition]:
    return [raw_table_asset(t) for t in INPUT_TABLES]
