"""Jobs and schedules."""

from __future__ import annotations

import dagster as dg

MAIN_JOB = "e2i_main"


def main_job() -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        MAIN_JOB,
        selection=dg.AssetSelection.all(),
        description="Every asset with every gate: ingest, validate and everything after.",
    )


def ingest_schedule(cron: str) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name="e2i_main_schedule",
        job_name=MAIN_JOB,
        cron_schedule=cron,
        execution_timezone="UTC",
        description="Re-ingest and re-validate on a cadence; gates block as in any run.",
    )
