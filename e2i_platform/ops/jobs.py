"""Jobs and schedules."""

from __future__ import annotations

import dagster as dg

from e2i_platform.ops.execution import multiprocess_config

MAIN_JOB = "e2i_main"


def main_job(
    max_concurrent: int, executor: dg.ExecutorDefinition | None = None
) -> dg.UnresolvedAssetJobDefinition:
    """Runs from the UI and schedules use capped parallel processes forked from a
    preloaded fork server (`ops.execution.multiprocess_config`); `make run` picks the
    in-process executor in its run config (one import of the code for the whole run).
    Given an `executor` (Celery: `ops.execution`), every run's steps go there instead."""
    if executor is not None:
        return dg.define_asset_job(
            MAIN_JOB,
            selection=dg.AssetSelection.all(),
            description="Every asset with every gate: ingest, validate and everything after.",
            executor_def=executor,
        )
    return dg.define_asset_job(
        MAIN_JOB,
        selection=dg.AssetSelection.all(),
        description="Every asset with every gate: ingest, validate and everything after.",
        executor_def=dg.multi_or_in_process_executor,
        config={"execution": {"config": {"multiprocess": multiprocess_config(max_concurrent)}}},
    )


def schedule_status(running: bool) -> dg.DefaultScheduleStatus:
    """A schedule's status before anyone turns it on or off (platform.schedules_running)."""
    return dg.DefaultScheduleStatus.RUNNING if running else dg.DefaultScheduleStatus.STOPPED


def ingest_schedule(cron: str, running: bool) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name="e2i_main_schedule",
        job_name=MAIN_JOB,
        cron_schedule=cron,
        execution_timezone="UTC",
        default_status=schedule_status(running),
        description="Re-ingest and re-validate on a cadence; gates block as in any run.",
    )
