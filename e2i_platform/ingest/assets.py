"""Raw tables: one asset per contract input table, landed or generated, untyped."""

import dagster as dg

from e2i_platform.contract import INPUT_TABLES, raw_asset_name
from e2i_platform.contract import table as contract_table
from e2i_platform.ingest.sources import SourceResource
from e2i_platform.lib import step_cost
from e2i_platform.lib.instance_guard import refuse_throwaway_instance
from e2i_platform.lib.table_metadata import contract_docs, table_metadata


def raw_table_asset(table: str) -> dg.AssetsDefinition:
    spec = contract_table(table)

    @dg.asset(
        name=raw_asset_name(table),
        group_name="ingest",
        kinds={"pandas", "parquet"},
        io_manager_key="warehouse",
        description=(
            f"{spec.description} Raw rows of `{table}` exactly as they arrived: from "
            f"`$E2I_HOME/landing/{table}.parquet|.csv` or the deterministic generator, as "
            "the table's source policy says (config/platform.yaml `sources`: `auto` takes "
            "the landing file when present; production requires it). Not yet typed or "
            "validated: the blocking `schema` check (Pandera) gates everything downstream."
        ),
    )
    def raw(context: dg.AssetExecutionContext, source: SourceResource) -> dg.Output:
        step_cost.start_step(context)
        refuse_throwaway_instance(context.instance, context.asset_key.to_user_string())
        loaded = source.load(table)
        df = loaded.frame
        context.log.info(f"{table}: {len(df)} rows from {loaded.source['kind']}")
        return dg.Output(
            df,
            data_version=dg.DataVersion(loaded.version),
            metadata={
                "source": dg.MetadataValue.json(loaded.source),
                "source_kind": dg.MetadataValue.text(loaded.source["kind"]),
                "source_policy": dg.MetadataValue.text(loaded.source["policy"]),
                # As it arrived: the contract's descriptions, not yet its guarantees.
                **table_metadata(df, contract_docs(table, constraints=False)),
            },
        )

    return raw


def raw_assets() -> list[dg.AssetsDefinition]:
    return [raw_table_asset(t) for t in INPUT_TABLES]
