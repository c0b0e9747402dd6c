"""The figures of the run-cost report (`ops.report`), read from the instance's event log.

Per asset, over the runs created in a period: how often a run planned it, how often
its step started, how long the successful ones took (Dagster's step events: the
duration STEP_SUCCESS records since STEP_START), how often it failed or was refused by
a closed upstream gate, how often it was planned but never started, and how often its
work was reused. Per check: its evaluations and how many passed, and its step's time.
Whatever the period: the checks whose latest evaluation failed (`ops.failing_gates`).

What is read: one query per run for its step and planning events (filtered by type),
one per check for its executions in the period, one per asset for reuse observations,
and the failing gates' queries. No event a figure does not use is loaded.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import dagster as dg

from e2i_platform.ops.failing_gates import FailingGate, failing_gates, label

PAGE = 1000
RUNLESS = ""  # the run id of events recorded outside runs (sensors, make run's reuse)
COMPLETED = ("SUCCEEDED", "FAILED")  # check executions that produced an evaluation


def percentile(values: Iterable[float], p: float) -> float | None:
    """The p-th percentile (0..100) of `values`, interpolated linearly between the two
    nearest ranks (numpy's default method); None when there are no values."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = (len(ordered) - 1) * p / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


@dataclass
class AssetFigures:
    asset: str
    planned: int = 0  # runs that planned to materialize it
    runs: int = 0  # its step started
    succeeded: int = 0
    failed: int = 0  # the step failed, for any reason but a closed gate
    refused: int = 0  # the step failed because an upstream gate was closed
    not_run: int = 0  # planned by a finished run whose step never started
    unfinished: int = 0  # started in a finished run that recorded no end for it
    reused_by_make_run: int = 0  # make run kept its last materialization (an observation)
    reused_in_step: int = 0  # the step ran and reused finished work (metadata reused=True)
    seconds: list[float] = field(default_factory=list)  # successful steps' wall time
    total_seconds: float = 0.0  # every started step, failed ones included
    peak_rss_mib: list[float] = field(default_factory=list)

    @property
    def reused(self) -> int:
        return self.reused_by_make_run + self.reused_in_step

    @property
    def reuse_rate(self) -> float | None:
        """Reuses per occasion the asset was wanted: a step run or a make run reuse."""
        return rate(self.reused, self.runs + self.reused_by_make_run)


@dataclass
class GateFigures:
    check: str  # "<asset>.<check>"
    evaluated: int = 0
    passed: int = 0
    failed_error: int = 0
    failed_warn: int = 0
    not_evaluated: int = 0  # planned by a finished run, never evaluated (skipped, crashed)
    seconds: list[float] = field(default_factory=list)  # the check step's wall time


@dataclass
class Figures:
    since: float
    until: float
    now: float
    runs_by_status: dict[str, int]
    assets: list[AssetFigures]
    gates: list[GateFigures]
    failing: list[FailingGate]

    @property
    def runs(self) -> int:
        return sum(self.runs_by_status.values())

    @property
    def empty(self) -> bool:
        """Nothing happened in the period: no run, no reuse, no check evaluation."""
        return (
            not self.runs
            and not any(a.reused_by_make_run for a in self.assets)
            and not any(g.evaluated for g in self.gates)
        )


def _value(entry):
    return entry.value if isinstance(entry, dg.MetadataValue) else entry


_RUN_EVENTS = {
    dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
    dg.DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED,
    dg.DagsterEventType.STEP_START,
    dg.DagsterEventType.STEP_SUCCESS,
    dg.DagsterEventType.STEP_FAILURE,
    dg.DagsterEventType.ASSET_MATERIALIZATION,
}


def _run_events(instance: dg.DagsterInstance, run_id: str) -> Iterator:
    cursor = None
    while True:
        page = instance.get_records_for_run(run_id, cursor=cursor, of_type=_RUN_EVENTS, limit=PAGE)
        for record in page.records:
            if record.event_log_entry.dagster_event is not None:
                yield record.event_log_entry
        if not page.has_more:
            return
        cursor = page.cursor


class _Tally:
    """Figures being counted, created on first sight of an asset or check."""

    def __init__(self, assets: Iterable[dg.AssetKey], checks: Iterable[dg.AssetCheckKey]):
        self.assets = {k.to_user_string(): AssetFigures(k.to_user_string()) for k in assets}
        self.gates = {label(k): GateFigures(label(k)) for k in checks}

    def asset(self, name: str) -> AssetFigures:
        return self.assets.setdefault(name, AssetFigures(name))

    def gate(self, name: str) -> GateFigures:
        return self.gates.setdefault(name, GateFigures(name))

    def add_run(self, entries: list, finished: bool) -> None:
        """One run's events: what each step was for (its planning events), then its steps."""
        targets: dict[str, list] = {}  # step key -> the figures it counts toward
        for entry in entries:
            event = entry.dagster_event
            if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED:
                figures = self.asset(event.event_specific_data.asset_key.to_user_string())
                figures.planned += 1
                targets.setdefault(event.step_key, []).append(figures)
            elif event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED:
                name = label(event.event_specific_data.asset_check_key)
                targets.setdefault(event.step_key, []).append(self.gate(name))
        started: dict[str, float] = {}
        ended: set[str] = set()
        for entry in entries:
            event = entry.dagster_event
            kind, step = event.event_type, event.step_key
            if kind == dg.DagsterEventType.ASSET_MATERIALIZATION:
                metadata = event.event_specific_data.materialization.metadata
                figures = self.asset(event.asset_key.to_user_string())
                if _value(metadata.get("reused")) is True:
                    figures.reused_in_step += 1
                if (rss := _value(metadata.get("step_peak_rss_mib"))) is not None:
                    figures.peak_rss_mib.append(float(rss))
            elif step not in targets:
                continue  # an op that is not an asset's or a check's step (e.g. rollback)
            elif kind == dg.DagsterEventType.STEP_START:
                started[step] = entry.timestamp
                for figures in targets[step]:
                    if isinstance(figures, AssetFigures):
                        figures.runs += 1
            elif kind == dg.DagsterEventType.STEP_SUCCESS:
                ended.add(step)
                seconds = event.event_specific_data.duration_ms / 1000
                for figures in targets[step]:
                    figures.seconds.append(seconds)
                    if isinstance(figures, AssetFigures):
                        figures.succeeded += 1
                        figures.total_seconds += seconds
            elif kind == dg.DagsterEventType.STEP_FAILURE:
                ended.add(step)
                user = event.step_failure_data.user_failure_data
                refused = bool(user and _value(user.metadata.get("closed_gates")))
                for figures in targets[step]:
                    if isinstance(figures, AssetFigures):
                        figures.total_seconds += entry.timestamp - started.get(
                            step, entry.timestamp
                        )
                        figures.refused += refused
                        figures.failed += not refused
        if finished:  # a running run has steps still to start or end
            for step, figures_list in targets.items():
                for figures in figures_list:
                    if isinstance(figures, AssetFigures):
                        figures.not_run += step not in started
                        figures.unfinished += step in started and step not in ended

    def add_check_history(
        self, instance, key: dg.AssetCheckKey, since: float, until: float, runs: dict
    ) -> None:
        """The check's executions in the period: those of the period's runs, and those
        recorded outside runs (the freshness sensor's) at a moment in the period."""
        gate, cursor = self.gate(label(key)), None
        while True:
            page = instance.event_log_storage.get_asset_check_execution_history(
                key, limit=PAGE, cursor=cursor
            )
            for record in page:
                when = record.event.timestamp if record.event else record.create_timestamp
                if record.run_id == RUNLESS:
                    if not since <= when < until:
                        continue
                elif record.run_id not in runs:
                    continue
                status = record.status.value
                if status not in COMPLETED:
                    if runs.get(record.run_id):  # planned by a finished run, never evaluated
                        gate.not_evaluated += 1
                    continue
                gate.evaluated += 1
                if status == "SUCCEEDED":
                    gate.passed += 1
                elif record.evaluation.severity == dg.AssetCheckSeverity.WARN:
                    gate.failed_warn += 1
                else:
                    gate.failed_error += 1
            # Ids grow with creation time (stored to the second): older pages are out.
            if len(page) < PAGE or page[-1].create_timestamp < since - 1:
                return
            cursor = page[-1].id

    def add_reuse_observations(self, instance, key: dg.AssetKey, since: float, until: float):
        figures, cursor = self.asset(key.to_user_string()), None
        while True:
            result = instance.fetch_observations(
                dg.AssetRecordsFilter(asset_key=key, after_timestamp=since, before_timestamp=until),
                limit=PAGE,
                cursor=cursor,
            )
            for record in result.records:
                metadata = record.asset_observation.metadata if record.asset_observation else {}
                figures.reused_by_make_run += _value(metadata.get("reused")) is True
            if not result.has_more:
                return
            cursor = result.cursor


def collect(
    instance: dg.DagsterInstance,
    asset_keys: Iterable[dg.AssetKey],
    check_keys: Iterable[dg.AssetCheckKey],
    since: float,
    until: float,
    now: float,
) -> Figures:
    """The figures over the runs created in [since, until), and the gates failing now.
    `asset_keys` and `check_keys` (the code location's) are listed first, in that order,
    even without runs; anything else the event log names is added after them."""
    from datetime import UTC, datetime

    asset_keys, check_keys = list(asset_keys), list(check_keys)
    records = instance.get_run_records(
        dg.RunsFilter(
            created_after=datetime.fromtimestamp(since, UTC),
            created_before=datetime.fromtimestamp(until, UTC),
        )
    )
    tally = _Tally(asset_keys, check_keys)
    by_status: dict[str, int] = {}
    runs: dict[str, bool] = {}  # run id -> whether it has finished
    for record in records:
        run = record.dagster_run
        by_status[run.status.value] = by_status.get(run.status.value, 0) + 1
        runs[run.run_id] = run.is_finished
        tally.add_run(list(_run_events(instance, run.run_id)), run.is_finished)
    for key in asset_keys:
        tally.add_reuse_observations(instance, key, since, until)
    for key in check_keys:
        tally.add_check_history(instance, key, since, until, runs)
    return Figures(
        since=since,
        until=until,
        now=now,
        runs_by_status=dict(sorted(by_status.items())),
        assets=list(tally.assets.values()),
        gates=list(tally.gates.values()),
        failing=failing_gates(instance, check_keys),
    )
