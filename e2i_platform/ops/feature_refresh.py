"""Keeping the online store fresh: the refresh job and its schedules (the freshness
sensor, which requests refreshes between them, is ops.freshness_sensor)."""

import dagster as dg

from e2i_platform.ops.jobs import schedule_status

REFRESH_JOB = "feature_refresh"


def refresh_run_config(mode: str) -> dict:
    return {"ops": {"online_features": {"config": {"mode": mode}}}}


def refresh_job():
    return dg.define_asset_job(
        REFRESH_JOB,
        selection=dg.AssetSelection.assets("online_features"),
        description="Materialize the online store (incremental by default) and check freshness.",
        config=refresh_run_config("incremental"),
    )


def _every(hours: int, minute: int) -> str:
    if hours % 24 == 0:
        days = hours // 24
        return f"{minute} 3 {'*' if days == 1 else f'*/{days}'} * *"
    return f"{minute} */{hours} * * *"


def refresh_schedules(
    incremental_hours: int, full_hours: int, running: bool
) -> list[dg.ScheduleDefinition]:
    return [
        dg.ScheduleDefinition(
            name="feature_incremental_schedule",
            job_name=REFRESH_JOB,
            cron_schedule=_every(incremental_hours, 5),
            execution_timezone="UTC",
            run_config=refresh_run_config("incremental"),
            default_status=schedule_status(running),
            description=f"Incremental materialization every {incremental_hours} h.",
        ),
        dg.ScheduleDefinition(
            name="feature_full_refresh_schedule",
            job_name=REFRESH_JOB,
            cron_schedule=_every(full_hours, 35),
            execution_timezone="UTC",
            run_config=refresh_run_config("full"),
            default_status=schedule_status(running),
            description=f"Full refresh of the online store every {full_hours} h.",
        ),
    ]
