"""When a gate's verdict still holds: the one rule, used by the guard, the `make run`
planner and automation.

A check's latest evaluation is a pass for what exists now only when
- it completed (an unfinished or planned evaluation judged nothing),
- it judged the latest materialization of its asset, and the materialization of
  every other asset it read that is the latest too (`e2i/judged_inputs`),
- it was judged under the configuration in force now (`e2i/judged_under`),
- it has not expired (`e2i/expires_at`: freshness, recency),
- the value it judged is the published one, for assets whose values are
  published after their gates (write-audit-publish),
- and it passed, or failed with WARN only: WARN informs and never blocks.

Anything the rule cannot establish is a closed gate, never an open one. The
evidence keys are written onto every check result by `lib.gate_checks`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import dagster as dg

JUDGED_INPUTS = "e2i/judged_inputs"  # {asset: run id of the materialization the check read}
JUDGED_UNDER = "e2i/judged_under"  # version of the configuration the check applied
EXPIRES_AT = "e2i/expires_at"  # epoch seconds after which the verdict no longer holds
EVALUATED_AT = "e2i/evaluated_at"

# Statuses of a check execution that produced an evaluation (planned / in-progress /
# skipped runs did not).
_COMPLETED = ("SUCCEEDED", "FAILED")


@dataclass(frozen=True)
class GateVerdict:
    check: dg.AssetCheckKey
    passed: bool
    reason: str
    # Closed only because the judged value is not the published one: another gate of the
    # asset has not passed on it (or its file is gone). The other gate says more.
    unpublished: bool = False

    @property
    def label(self) -> str:
        return f"{self.check.name} on {self.check.asset_key.to_user_string()}"


@dataclass(frozen=True)
class Expected:
    """What a verdict must match now.

    `config_version(check)` is the version of the configuration the check would apply
    now (it raises when the check is unknown: the verdict is then closed);
    `reads(check)` the assets the check reads besides its own; `published(asset)` the
    run whose value of the asset is published, None when none is, or `UNMANAGED` for
    an asset whose values are not published after its gates."""

    config_version: Callable[[dg.AssetCheckKey], str]
    reads: Callable[[dg.AssetCheckKey], Iterable[dg.AssetKey]]
    published: Callable[[dg.AssetKey], str | None]
    now: float = field(default_factory=lambda: datetime.now(UTC).timestamp())


UNMANAGED = "<not a published value>"  # e.g. the online store: nothing is staged


def _meta(evaluation, key: str):
    value = evaluation.metadata.get(key)
    return getattr(value, "value", value) if value is not None else None


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def latest_materializations(instance: dg.DagsterInstance, keys: Iterable[dg.AssetKey]) -> dict:
    """The latest materialization record (storage id, run id) of each asset, or None; one
    query for all of them (or one per asset, for a few)."""
    keys = list(keys)
    if len(keys) <= 3:  # a query per key is cheaper than the asset-records query for few
        found = {}
        for key in keys:
            records = instance.fetch_materializations(key, limit=1).records
            found[key] = records[0] if records else None
        return found
    found = {
        r.asset_entry.asset_key: r.asset_entry.last_materialization_record
        for r in instance.get_asset_records(keys)
    }
    return {k: found.get(k) for k in keys}


def latest_evaluations(instance: dg.DagsterInstance, keys: Iterable[dg.AssetCheckKey]) -> dict:
    """The latest evaluation record of each check, or None; one query for all of them."""
    keys = list(keys)
    found = instance.event_log_storage.get_latest_asset_check_execution_by_key(keys)
    return {k: found.get(k) for k in keys}


def evidence_problem(
    check_key: dg.AssetCheckKey,
    expected: Expected,
    judged: dict,
    judged_under: str | None,
    expires: float | None,
    latest_record: Callable,
    evaluated: str,
) -> str | None:
    """Why evidence recorded by a check no longer describes what exists now, or None:
    what it read, the configuration it applied, its expiry (shared by `judge` and by the
    publication of a value whose passes were stamped by several checks)."""
    for read in sorted(expected.reads(check_key), key=str):
        name = read.to_user_string()
        record_now = latest_record(read)
        now_run = record_now.run_id if record_now is not None else None
        if name not in judged:
            return f"its evaluation does not record which {name} it read"
        if judged[name] != now_run:
            return (
                f"it judged {name} of run {judged[name]}, but the latest {name} is from "
                f"run {now_run}"
            )
    try:
        config_now = expected.config_version(check_key)
    except Exception as exc:  # cannot tell what configuration applies: closed
        return f"cannot tell its configuration now ({type(exc).__name__}: {exc})"
    if judged_under != config_now:
        return (
            f"it was judged under configuration {judged_under or 'unrecorded'}, "
            f"the configuration now is {config_now}"
        )
    if expires is not None and expected.now >= float(expires):
        return f"its verdict of {evaluated} expired at {_when(float(expires))}"
    return None


def judge(
    instance: dg.DagsterInstance,
    check_key: dg.AssetCheckKey,
    expected: Expected,
    latest: dict[dg.AssetKey, object] | None = None,
    evaluations: dict | None = None,
) -> GateVerdict:
    """The verdict of `check_key` on what exists now. `latest` may hold latest
    materialization records already fetched (`latest_materializations`), `evaluations`
    latest evaluation records (`latest_evaluations`)."""
    latest = latest if latest is not None else {}

    def latest_record(asset: dg.AssetKey):
        if asset not in latest:
            latest.update(latest_materializations(instance, [asset]))
        return latest[asset]

    def closed(reason: str) -> GateVerdict:
        return GateVerdict(check_key, False, reason)

    asset = check_key.asset_key
    materialization = latest_record(asset)
    if materialization is None:
        return closed("its asset has never been materialized")
    current = materialization.run_id
    if evaluations is None or check_key not in evaluations:
        evaluations = latest_evaluations(instance, [check_key])
    record = evaluations[check_key]
    if record is None:
        return closed("it has never been evaluated")
    if record.status.value not in _COMPLETED:
        return closed(
            f"its latest evaluation (run {record.run_id}) did not complete "
            f"(status {record.status.value})"
        )
    evaluation = record.evaluation
    target = evaluation.target_materialization_data if evaluation else None
    if target is None or target.storage_id != materialization.storage_id:
        evaluated = f"run {target.run_id}" if target else "no materialization"
        return closed(
            f"it has not evaluated the latest materialization (run {current}); "
            f"its latest evaluation was for {evaluated}"
        )
    judged = _meta(evaluation, JUDGED_INPUTS)
    judged = json.loads(judged) if isinstance(judged, str) else (judged or {})
    if judged.get(asset.to_user_string(), target.run_id) != target.run_id:
        return closed(
            f"it read the value of run {judged[asset.to_user_string()]}, not the one it is "
            f"recorded against (run {target.run_id})"
        )
    problem = evidence_problem(
        check_key,
        expected,
        judged,
        _meta(evaluation, JUDGED_UNDER),
        _meta(evaluation, EXPIRES_AT),
        latest_record,
        _meta(evaluation, EVALUATED_AT) or f"run {record.run_id}",
    )
    if problem:
        return closed(problem)
    expires = _meta(evaluation, EXPIRES_AT)
    warned = not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    if not evaluation.passed and not warned:
        summary = evaluation.description or "failed"
        return closed(f"its latest result is FAILED (ERROR) in run {record.run_id}: {summary}")
    published = expected.published(asset)
    if published != UNMANAGED and published != current:
        shown = f"run {published}" if published else "nothing"
        return GateVerdict(
            check_key,
            False,
            f"the value it judged (run {current}) is not the published one ({shown})",
            unpublished=True,
        )
    until = f", valid until {_when(float(expires))}" if expires is not None else ""
    if warned:
        return GateVerdict(check_key, True, f"warned (not blocking) in run {record.run_id}{until}")
    return GateVerdict(check_key, True, f"passed in run {record.run_id}{until}")
