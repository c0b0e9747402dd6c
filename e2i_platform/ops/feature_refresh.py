"""Keeping the online store fresh: the refresh job, its schedules and the freshness sensor."""

import hashlib
from datetime import UTC, datetime

import dagster as dg

from e2i_platform.ops.jobs import schedule_status
from e2i_platform.resources.config import ConfigResource
from e2i_platform.resources.feast import FeastResource

REFRESH_JOB = "feature_refresh"
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


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


def freshness_sensor(interval_seconds: int) -> dg.SensorDefinition:
    @dg.sensor(
        name="feature_freshness_sensor",
        job_name=REFRESH_JOB,
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Evaluates feature freshness (three clocks); when a view is stale or unknown it "
            "requests one incremental materialization with the freshness check, unless such "
            "a run is already queued or in flight."
        ),
    )
    def feature_freshness_sensor(
        context: dg.SensorEvaluationContext, feast: FeastResource, e2i_config: ConfigResource
    ):
        from e2i_platform.features.checks import evaluate_freshness

        settings = e2i_config.settings()
        now = datetime.now(UTC)
        results = evaluate_freshness(feast, settings.feast, now)
        # What is true now is a check result, so the UI, the guard and automation see it.
        events = [freshness_evaluation(context.instance, settings, results, now)]
        stale = [r for r in results if r.status in ("stale", "unknown")]
        if not stale:
            return dg.SensorResult(
                skip_reason="no stale view: " + ", ".join(f"{r.view} {r.status}" for r in results),
                asset_events=events,
            )
        running = context.instance.get_runs(
            filters=dg.RunsFilter(job_name=REFRESH_JOB, statuses=IN_FLIGHT), limit=1
        )
        if running:
            return dg.SensorResult(
                skip_reason=f"{', '.join(r.view for r in stale)} stale, but refresh run "
                f"{running[0].run_id} is {running[0].status.value}: not launching a duplicate",
                asset_events=events,
            )
        # One request per stale state: the same views with the same coverage never launch twice.
        state = "|".join(f"{r.view}:{r.status}:{r.coverage_end}" for r in stale)
        request = dg.RunRequest(
            run_key=f"freshness-{hashlib.sha256(state.encode()).hexdigest()[:16]}",
            run_config=refresh_run_config("incremental"),
            tags={
                "e2i/reason": "stale-features",
                "e2i/stale_views": ",".join(r.view for r in stale),
            },
        )
        return dg.SensorResult(run_requests=[request], asset_events=events)

    return feature_freshness_sensor


def freshness_evaluation(instance, settings, results, now) -> dg.AssetCheckEvaluation:
    """The sensor's measurement as an evaluation of the `freshness` check on the latest
    `online_features` materialization, with the same evidence a run's check records."""
    from dagster._core.definitions.asset_checks.asset_check_evaluation import (
        AssetCheckEvaluationTargetMaterializationData,
    )

    from e2i_platform.features.checks import freshness_gate
    from e2i_platform.lib.gate_checks import evidence, evidence_metadata
    from e2i_platform.lib.verdicts import latest_materializations

    key = dg.AssetCheckKey(dg.AssetKey("online_features"), "freshness")
    result = freshness_gate(results, now)
    latest = latest_materializations(instance, [key.asset_key])[key.asset_key]
    metadata = dict(result.metadata)
    judged = {"online_features": latest.run_id if latest else None}
    metadata.update(evidence_metadata(evidence(key, settings, judged, metadata)))
    metadata["evaluated_by"] = dg.MetadataValue.text("feature_freshness_sensor")
    target = (
        AssetCheckEvaluationTargetMaterializationData(
            storage_id=latest.storage_id, run_id=latest.run_id, timestamp=latest.timestamp
        )
        if latest
        else None
    )
    return dg.AssetCheckEvaluation(
        asset_key=key.asset_key,
        check_name=key.name,
        passed=result.passed,
        severity=result.severity,
        metadata=metadata,
        description=result.description,
        target_materialization_data=target,
        blocking=True,
    )
