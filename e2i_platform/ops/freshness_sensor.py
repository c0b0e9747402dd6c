"""The freshness sensor: measures every view's freshness each tick, records it as a
`freshness` result, and heals what a refresh can heal -- or escalates.

What a tick does with a stale or unknown view depends on its kind
(`features.freshness.ViewFreshness.kind`):

- serving-stale or store unreachable: a refresh helps (or will, once the store answers).
  The sensor requests one, unless a run that writes `online_features` is queued or in
  flight, whatever its job (a UI run, `make run`, a schedule). A refresh that does not
  heal the state (its run failed, or it succeeded and the view is still stale) is
  followed by another after a back-off that doubles; after `refresh.attempts` of them
  the sensor escalates (`escalated` on the result, so the alert sensor pages again) and
  stops refreshing until the state changes. The first attempt is incremental (which
  refills a view the store lost), the next ones full.
- source-stale: the offline data themselves are old. No refresh can help: the result
  pages (through the alert sensor), and no run is requested.
- warning band: notified (a WARN result), never refreshed.

The attempt count lives in the sensor's cursor, per stale state (the set of views and
kinds): a new state starts a new count.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime

import dagster as dg

from e2i_platform.ops.feature_refresh import REFRESH_JOB, refresh_run_config
from e2i_platform.resources.config import ConfigResource
from e2i_platform.resources.feast import FeastResource

SENSOR = "feature_freshness_sensor"
ONLINE = "online_features"
ATTEMPT_TAG = "e2i/refresh_attempt"
REFRESHABLE = ("serving", "store")  # kinds a refresh can heal
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def _names(results) -> str:
    return ", ".join(r.view for r in results)


def writes_online_features(instance: dg.DagsterInstance, run: dg.DagsterRun) -> bool:
    """Whether a run materializes online_features: by its asset selection, or by the
    steps of its execution plan (jobs built for a fixed selection carry none)."""
    if run.asset_selection:
        return dg.AssetKey(ONLINE) in run.asset_selection
    steps = run.step_keys_to_execute
    if steps is None and run.execution_plan_snapshot_id:
        plan = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
        steps = plan.step_keys_to_execute
    return ONLINE in (steps or ())


def online_writers_in_flight(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    runs = instance.get_runs(filters=dg.RunsFilter(statuses=IN_FLIGHT), limit=100)
    return [r for r in runs if writes_online_features(instance, r)]


def last_outcome(instance: dg.DagsterInstance, episode: dict) -> str:
    key = episode.get("last_run_key")
    if not key:
        return "none requested"
    runs = instance.get_runs(filters=dg.RunsFilter(tags={ATTEMPT_TAG: key}), limit=1)
    if not runs:
        return f"attempt {episode['attempts']}'s run was never launched"
    run = runs[0]
    return f"attempt {episode['attempts']}: run {run.run_id} {run.status.value}"


@dataclass
class Decision:
    action: str  # what the tick did, in words (the skip reason and the result's metadata)
    episode: dict | None  # the stale state being healed, for the cursor
    request: dg.RunRequest | None = None

    @property
    def escalated(self) -> bool:
        return bool(self.episode and self.episode.get("escalated"))

    def metadata(self) -> dict[str, dg.MetadataValue]:
        return {
            "sensor_action": dg.MetadataValue.text(self.action),
            "refresh_attempts": dg.MetadataValue.int(
                self.episode["attempts"] if self.episode else 0
            ),
            "escalated": dg.MetadataValue.bool(self.escalated),
        }


def decide(instance, results, episode: dict | None, policy, now: float) -> Decision:
    """What to do about `results` given the episode so far (see the module docstring)."""
    refreshable = [r for r in results if r.kind in REFRESHABLE]
    notes = []
    if source := [r for r in results if r.kind == "source"]:
        notes.append(
            f"{_names(source)} source-stale (the offline data are old): a refresh cannot "
            "help, a new ingest can (e2i_main); alerted, not refreshed"
        )
    if warning := [r for r in results if r.status == "warning"]:
        notes.append(f"{_names(warning)} in the warning band: notified, not refreshed")
    if not refreshable:
        stale = [r for r in results if r.status in ("stale", "unknown")]
        head = (
            "" if stale else "no stale view: " + ", ".join(f"{r.view} {r.status}" for r in results)
        )
        return Decision("; ".join(filter(None, [head, *notes])), None)

    signature = ",".join(sorted(f"{r.view}:{r.kind}" for r in refreshable))
    if not episode or episode.get("signature") != signature:
        episode = {"signature": signature, "since": now, "attempts": 0, "last_at": None}
    views = _names(refreshable)
    tail = "; ".join(notes)

    def decision(action: str, request=None) -> Decision:
        return Decision("; ".join(filter(None, [action, tail])), episode, request)

    if writers := online_writers_in_flight(instance):
        w = writers[0]
        return decision(
            f"{views} stale, but run {w.run_id} ({w.job_name}) writing {ONLINE} is "
            f"{w.status.value}: not launching a duplicate"
        )
    attempts = episode["attempts"]
    if attempts >= policy.attempts:
        episode["escalated"] = True
        return decision(
            f"escalated: {attempts} refresh(es) did not heal {views} "
            f"({last_outcome(instance, episode)}); no automatic refresh until the state "
            f"changes: fix the cause in the evidence, then run {REFRESH_JOB}"
        )
    if attempts:
        due = episode["last_at"] + policy.first_wait_minutes * 60 * 2 ** (attempts - 1)
        if now < due:
            return decision(
                f"{views} still stale after {last_outcome(instance, episode)}; "
                f"attempt {attempts + 1} of {policy.attempts} at {_iso(due)}"
            )
    attempt = attempts + 1
    mode = "incremental" if attempt == 1 else "full"
    identity = hashlib.sha256(f"{signature}|{episode['since']}".encode()).hexdigest()[:12]
    key = f"freshness-{identity}-{attempt}"
    episode.update(attempts=attempt, last_at=now, last_run_key=key)
    request = dg.RunRequest(
        run_key=key,
        run_config=refresh_run_config(mode),
        tags={
            "e2i/reason": "stale-features",
            "e2i/stale_views": ",".join(r.view for r in refreshable),
            ATTEMPT_TAG: key,
        },
    )
    return decision(
        f"requested refresh attempt {attempt} of {policy.attempts} ({mode}) for {views}", request
    )


def freshness_sensor(interval_seconds: int) -> dg.SensorDefinition:
    @dg.sensor(
        name=SENSOR,
        job_name=REFRESH_JOB,
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Measures feature freshness (three clocks) and records it as a freshness result. "
            "Serving-stale or unreachable-store views get a refresh (unless a run writing "
            "online_features is in flight), retried with back-off and escalated after "
            "refresh.attempts; source-stale views are alerted, never refreshed; WARN-band "
            "views are notified."
        ),
    )
    def feature_freshness_sensor(
        context: dg.SensorEvaluationContext, feast: FeastResource, e2i_config: ConfigResource
    ):
        from e2i_platform.features.checks import evaluate_freshness

        settings = e2i_config.settings()
        now = datetime.now(UTC)
        results = evaluate_freshness(feast, settings.feast, now)
        state = json.loads(context.cursor) if context.cursor else {}
        decision = decide(
            context.instance, results, state.get("episode"), settings.feast.refresh, now.timestamp()
        )
        state["episode"] = decision.episode
        # What is true now is a check result, so the UI, the guard and the alerts see it.
        event = freshness_evaluation(context.instance, settings, results, now, decision)
        return dg.SensorResult(
            run_requests=[decision.request] if decision.request else None,
            skip_reason=None if decision.request else decision.action,
            asset_events=[event],
            cursor=json.dumps(state, sort_keys=True),
        )

    return feature_freshness_sensor


def freshness_evaluation(
    instance, settings, results, now, decision: Decision | None = None
) -> dg.AssetCheckEvaluation:
    """The sensor's measurement as an evaluation of the `freshness` check on the latest
    `online_features` materialization, with the same evidence a run's check records and
    what the sensor did about it."""
    from dagster._core.definitions.asset_checks.asset_check_evaluation import (
        AssetCheckEvaluationTargetMaterializationData,
    )

    from e2i_platform.features.checks import freshness_gate
    from e2i_platform.lib.gate_checks import evidence, evidence_metadata
    from e2i_platform.lib.verdicts import latest_materializations

    key = dg.AssetCheckKey(dg.AssetKey(ONLINE), "freshness")
    result = freshness_gate(results, now)
    latest = latest_materializations(instance, [key.asset_key])[key.asset_key]
    metadata = dict(result.metadata)
    judged = {ONLINE: latest.run_id if latest else None}
    metadata.update(evidence_metadata(evidence(key, settings, judged, metadata)))
    metadata["evaluated_by"] = dg.MetadataValue.text(SENSOR)
    description = result.description
    if decision is not None:
        metadata.update(decision.metadata())
        if decision.escalated:
            description = f"{description} -- {decision.action}"
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
        description=description,
        target_materialization_data=target,
        blocking=True,
    )
