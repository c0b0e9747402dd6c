"""The gates failing now, for the run-cost report (`ops.report`): every check whose
latest evaluation failed, whenever that was, with the start of its failing streak.

One query gives the latest execution of every check; only a check whose latest
execution is not a pass has its history read, newest first, back to its last pass.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import dagster as dg

STREAK_PAGE = 50


def label(key: dg.AssetCheckKey) -> str:
    return f"{key.asset_key.to_user_string()}.{key.name}"


@dataclass(frozen=True)
class FailingGate:
    check: str
    severity: str
    description: str
    since: float  # the first failing evaluation of the current streak
    evaluations: int  # failing evaluations in a row, up to the latest
    run_id: str  # of the latest one ("" when a sensor recorded it)
    latest: float


def failing_gates(
    instance: dg.DagsterInstance, check_keys: Iterable[dg.AssetCheckKey]
) -> list[FailingGate]:
    """Every check whose latest evaluation failed, whenever it was, with its streak."""
    from dagster._core.storage.asset_check_execution_record import (
        AssetCheckExecutionRecordStatus as Status,
    )

    storage = instance.event_log_storage
    keys = list(check_keys)
    latest = storage.get_latest_asset_check_execution_by_key(keys)  # one query for all
    completed = {Status.SUCCEEDED, Status.FAILED}
    failing = []
    for key in keys:
        record = latest.get(key)
        if record is None or record.status == Status.SUCCEEDED:
            continue  # never evaluated, or passed
        # Failed, or planned in a run that has not evaluated it (yet): walk the evaluations.
        streak, cursor = [], None
        while True:
            page = storage.get_asset_check_execution_history(
                key, limit=STREAK_PAGE, cursor=cursor, status=completed
            )
            ended = next((i for i, r in enumerate(page) if r.status == Status.SUCCEEDED), None)
            streak += page if ended is None else page[:ended]
            if ended is not None or len(page) < STREAK_PAGE:
                break
            cursor = page[-1].id
        if not streak:
            continue
        newest, first = streak[0], streak[-1]
        evaluation = newest.evaluation
        failing.append(
            FailingGate(
                check=label(key),
                severity=evaluation.severity.value,
                description=(evaluation.description or "").strip().split("\n")[0],
                since=first.event.timestamp,
                evaluations=len(streak),
                run_id=newest.run_id,
                latest=newest.event.timestamp,
            )
        )
    return failing
