"""What an alert says: built from a check evaluation or a failed run in the event log.

Each alert names what failed, summarises the evidence the gate recorded (counts, the
failing rules, observed against threshold), the asset and check, the run, and links
to the Dagster UI. The evidence comes from the metadata every gate writes through
`lib.gate_results`, so one builder reads every gate.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from urllib.parse import quote

import dagster as dg

from e2i_platform.ops.freshness_sensor import ATTEMPT_TAG
from e2i_platform.ops.progress import failure_text
from e2i_platform.resources.notifier import Alert

TOP_RULES = 5
SCOPE_ASSETS = 4  # assets named in a run alert's title; more are counted
# Who started a run, read from its tags (the first one present).
LAUNCHERS = (
    ("dagster/schedule_name", "schedule {}"),
    ("dagster/sensor_name", "sensor {}"),
    ("e2i/launched_by", "{}"),
    ("e2i/rollback", "rollback to release {}"),
    ("dagster/backfill", "backfill {}"),
)


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def _value(entry):
    return entry.value if isinstance(entry, dg.MetadataValue) else entry


def _number(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def evidence_lines(metadata: dict) -> list[str]:
    """The evidence summary of a gate's metadata (lib.gate_results' keys)."""
    meta = {k: _value(v) for k, v in metadata.items()}
    lines = []
    if "rows_checked" in meta:
        lines.append(f"rows checked {meta['rows_checked']}, failing {meta.get('failing_rows', 0)}")
    # Freshness counts one "failing rule" per view: its view lines below say more.
    counts = {} if meta.get("views") else meta.get("failure_counts") or {}
    for rule, count in list(counts.items())[:TOP_RULES]:
        lines.append(f"failing rule {rule}: {count}")
    if len(counts) > TOP_RULES:
        lines.append(f"... and {len(counts) - TOP_RULES} more failing rules")
    for key, observed in sorted(meta.items()):
        if not key.startswith("observed_"):
            continue
        name = key.removeprefix("observed_")
        limit = next(
            ((k, v) for k, v in meta.items() if k.startswith("threshold_") and name in k), None
        )
        against = f" vs {limit[0].removeprefix('threshold_')} {_number(limit[1])}" if limit else ""
        lines.append(f"observed {name} {_number(observed)}{against}")
    for view, data in (meta.get("views") or {}).items():
        if isinstance(data, dict) and data.get("status") not in (None, "fresh"):
            kind = f" [{data['kind']}]" if data.get("kind") else ""
            lines.append(f"view {view} {data['status']}{kind}: {data.get('reason', '')}")
    if meta.get("stale_kind"):
        lines.append(f"stale kind: {meta['stale_kind']}")
    return lines


def check_url(base: str, key: dg.AssetCheckKey) -> str:
    path = "/".join(quote(p) for p in key.asset_key.path)
    return f"{base.rstrip('/')}/assets/{path}?view=checks&checkDetail={quote(key.name)}"


def run_url(base: str, run_id: str) -> str:
    return f"{base.rstrip('/')}/runs/{run_id}"


def check_alert(
    key: dg.AssetCheckKey, evaluation, run_id: str, state: str, since: float, now: float, base: str
) -> Alert:
    """An alert about the evaluation of one check (`AssetCheckEvaluation`)."""
    asset = key.asset_key.to_user_string()
    kind = "freshness" if key.name == "freshness" else "gate"
    if state != "recovered" and _value(evaluation.metadata.get("escalated", False)):
        kind = "escalation"  # the freshness sensor's refreshes did not heal it
    severity = "WARN" if evaluation.severity == dg.AssetCheckSeverity.WARN else "ERROR"
    if state == "recovered":
        what = f"{key.name} on {asset} passes again: {evaluation.description or 'passed'}"
        evidence = []
    elif kind == "escalation":  # what the sensor gave up on leads; the views follow
        what = _value(evaluation.metadata["sensor_action"])
        evidence = evidence_lines(evaluation.metadata)
    else:
        what = evaluation.description or f"{key.name} on {asset} failed"
        evidence = evidence_lines(evaluation.metadata)
    return Alert(
        key=f"check:{asset}/{key.name}",
        kind=kind,
        state=state,
        severity=severity,
        subject=f"{kind} {asset}/{key.name}",
        what=what,
        evidence=evidence,
        asset=asset,
        check=key.name,
        run_id=run_id or None,
        url=run_url(base, run_id) if run_id else check_url(base, key),
        since=iso(since),
        at=iso(now),
    )


def launched_by(tags: dict) -> str:
    for tag, form in LAUNCHERS:
        if tags.get(tag):
            return form.format(tags[tag])
    return "the UI or the Dagster CLI"


def step_failures(instance: dg.DagsterInstance, run_id: str) -> list[tuple[str, str, list]]:
    """(step key, the user's error, closed gates) of each failed step of a run."""
    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.STEP_FAILURE, limit=50
    ).records
    failures = []
    for record in records:
        event = record.event_log_entry.dagster_event
        data = event.step_failure_data
        user = data.user_failure_data
        # A closed gate's refusal keeps its lines (one per gate); other errors read as
        # `make run` prints them: the user's exception, not Dagster's wrapper.
        message = (user.description if user and user.description else None) or failure_text(
            data.error
        )
        closed = []
        if user and "closed_gates" in user.metadata:
            closed = list(_value(user.metadata["closed_gates"]) or [])
        failures.append((event.step_key, message, closed))
    return failures


def run_alert(instance, run, failure_message: str, state: str, since: float, now: float, base):
    """An alert about a failed run (or its job's recovery). A run whose steps were
    refused by a closed gate says so: a refusal is a gate doing its job upstream."""
    scope = run_scope(instance, run)
    if state == "recovered":
        return Alert(
            key=run_key(instance, run),
            kind="run",
            state=state,
            severity="ERROR",
            subject=f"run {scope}",
            what=f"run {run.run_id} of {scope} succeeded after the failure",
            run_id=run.run_id,
            url=run_url(base, run.run_id),
            since=iso(since),
            at=iso(now),
        )
    failures = step_failures(instance, run.run_id)
    refused = [f for f in failures if f[2]]
    verb = "was refused" if refused and len(refused) == len(failures) else "failed"
    evidence = [f"launched by {launched_by(run.tags)}"]
    # The freshness sensor's own refresh attempts: it retries them with back-off and
    # pages when it escalates, so each failed attempt notifies rather than pages.
    attempt = run.tags.get(ATTEMPT_TAG)
    if attempt:
        evidence.append(
            f"refresh attempt {attempt.rsplit('-', 1)[-1]} of the freshness sensor: retried "
            "with back-off, escalated (paged) after refresh.attempts"
        )
    for step, message, closed in failures[:TOP_RULES]:
        lines = message.strip().splitlines() or [message]
        gates = f" (closed gates: {', '.join(closed)})" if closed else ""
        evidence.append(f"step {step}: {lines[0]}{gates}")
        if closed:  # why each gate is closed: the guard's "gate <label>: <reason>" lines
            reasons = [ln.strip() for ln in lines[1:] if ln.strip().startswith("gate ")]
            evidence += [f"  {r}" for r in reasons[:TOP_RULES]]
    if len(failures) > TOP_RULES:
        evidence.append(f"... and {len(failures) - TOP_RULES} more failed steps")
    if not failures:
        evidence.append(failure_message.strip().splitlines()[0] if failure_message else "")
    return Alert(
        key=run_key(instance, run),
        kind="run",
        state=state,
        severity="WARN" if attempt else "ERROR",
        subject=f"run {scope} {verb}",
        what=f"run {run.run_id} of {scope} {verb}"
        + (f": {len(failures)} step(s) failed" if failures else f": {failure_message}"),
        evidence=[e for e in evidence if e],
        run_id=run.run_id,
        url=run_url(base, run.run_id),
        since=iso(since),
        at=iso(now),
    )


def run_assets(instance: dg.DagsterInstance, run) -> list[str]:
    """The assets a run set out to materialize: its asset selection, or (a job built
    for a fixed selection, as `materialize` builds) its planned materializations."""
    keys = set(run.asset_selection or ())
    if not keys:
        planned = instance.get_records_for_run(
            run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED
        ).records
        keys = {r.event_log_entry.dagster_event.event_specific_data.asset_key for r in planned}
    return sorted(k.to_user_string() for k in keys)


def run_scope(instance: dg.DagsterInstance, run) -> str:
    """The job and, up to SCOPE_ASSETS of them, its assets: what a title can carry."""
    assets = run_assets(instance, run)
    if not assets:
        return run.job_name
    if len(assets) > SCOPE_ASSETS:
        return f"{run.job_name} [{len(assets)} assets]"
    return f"{run.job_name} [{', '.join(assets)}]"


def run_key(instance: dg.DagsterInstance, run) -> str:
    """Runs of the same job over the same assets share a key: the next success of the
    same work is the recovery."""
    assets = ",".join(run_assets(instance, run))
    if len(assets) > 200:
        assets = hashlib.sha256(assets.encode()).hexdigest()[:16]
    return f"run:{run.job_name}:{assets}"
