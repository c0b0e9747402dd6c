"""Runs whose worker dies: noticed, ended FAILED and their pool slots freed.

Every run launched on the instance goes through `WatchedRunLauncher`
(config/dagster/*.yaml): Dagster's default launcher, plus the
worker health check its run monitoring calls. The default launcher has none, so a run
whose processes were SIGKILLed (code server and run worker with them) stayed STARTED
for ever. Now the monitoring daemon (`make dev`, `dagster-daemon run`) fails such a
run within its poll interval, and `make run`, which may run with no daemon at all,
fails them at its start (`fail_dead_runs`). Either way the run gets a RUN_FAILURE
event saying why, which `alert_sensor` pages on. A run counts as dead only when its
processes ran on this host (recorded at launch; on a SQLite instance, any run) and none
of those it recorded (run worker, executor, step workers) is alive: anything else
(another or an unknown host, nothing recorded yet) is left alone. The instance config
names this module, so every Dagster process of the platform imports it: keep it light.
"""

from __future__ import annotations

import socket
import time

import dagster as dg
from dagster._core.launcher import CheckRunHealthResult, DefaultRunLauncher, WorkerStatus

WORKER_HOST_TAG = "e2i/run_worker_host"  # where the run's worker processes run
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


class WatchedRunLauncher(DefaultRunLauncher):
    """Dagster's default run launcher (a run worker under the location's code server),
    which also answers run monitoring's worker health check (see the module docstring).

    A launch on a code server of this machine (a socket or localhost, as every
    workspace.yaml location is) records this host on the run, since only here can the
    run's processes be looked up."""

    def launch_run(self, context) -> None:
        run = context.dagster_run
        origin = run.remote_job_origin
        if origin is not None and context.workspace is not None:
            name = origin.repository_origin.code_location_origin.location_name
            location = context.workspace.get_code_location(name)
            if getattr(location, "socket", None) or getattr(location, "host", None) in LOCAL_HOSTS:
                self._instance.add_run_tags(run.run_id, {WORKER_HOST_TAG: socket.gethostname()})
        super().launch_run(context)

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        # Monitoring fails a run on any status but RUNNING or SUCCESS, UNKNOWN included:
        # what cannot be told here is reported RUNNING, so a live run is never failed.
        gone = worker_gone(self._instance, run)
        if gone is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "not known to be gone")
        return CheckRunHealthResult(WorkerStatus.FAILED, gone)

    def get_run_worker_debug_info(
        self, run: dg.DagsterRun, include_container_logs: bool | None = True
    ) -> str | None:
        """Appended to monitoring's failure message: where the run was when it died."""
        return last_event(self._instance, run.run_id)


def last_event(instance: dg.DagsterInstance, run_id: str) -> str | None:
    """The run's last recorded event, in words: what it was doing when it stopped."""
    from datetime import UTC, datetime

    # The newest entries, plain log lines among them (those carry no event).
    entries = instance.event_log_storage.get_logs_for_run(run_id, limit=50, ascending=False)
    entry = next((e for e in entries if e.dagster_event is not None), None)
    if entry is None:
        return None
    event = entry.dagster_event
    at = datetime.fromtimestamp(entry.timestamp, UTC).isoformat(timespec="seconds")
    step = f" of step {event.step_key}" if event.step_key else ""
    return f"Its last recorded event: {event.event_type_value}{step} at {at}."


def recorded_processes(instance: dg.DagsterInstance, run_id: str) -> dict[int, float]:
    """The processes a run's workers recorded (pid -> when first recorded): the run
    worker ("Started process for run"), its executor, and multiprocess step workers."""
    kinds = {dg.DagsterEventType.ENGINE_EVENT, dg.DagsterEventType.STEP_WORKER_STARTED}
    pids: dict[int, float] = {}
    for entry in instance.all_logs(run_id, of_type=kinds):
        data = entry.dagster_event.event_specific_data if entry.dagster_event else None
        value = getattr(data, "metadata", {}).get("pid") if data is not None else None
        text = getattr(value, "value", value)
        if isinstance(text, str) and text.isdigit():
            pids.setdefault(int(text), entry.timestamp)
    return pids


def _running(pid: int, recorded_at: float) -> bool:
    """Whether the process recorded as `pid` at `recorded_at` still runs: a zombie has
    ended, and a process created after that moment only reuses the number."""
    import psutil

    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        # Slack for the clock psutil derives creation times from (boot time in whole
        # seconds); a reused pid is only ever handed out much later than that.
        return process.create_time() <= recorded_at + 5.0
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True  # another user's process: it exists


def worker_host(instance: dg.DagsterInstance, run: dg.DagsterRun) -> str | None:
    """The host the run's processes ran on, when known: recorded at launch, or this one
    for any run of a SQLite instance (a file on this machine's disk, which only this
    machine's processes write: `dagster asset materialize`, `make rollback` included)."""
    from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage

    if host := run.tags.get(WORKER_HOST_TAG):
        return host
    return socket.gethostname() if isinstance(instance.run_storage, SqliteRunStorage) else None


def worker_gone(instance: dg.DagsterInstance, run: dg.DagsterRun) -> str | None:
    """Why `run`'s worker is known to be gone, or None: alive, or not knowable here
    (another or an unknown host, nothing recorded yet)."""
    host = worker_host(instance, run)
    if host != socket.gethostname():
        return None
    pids = recorded_processes(instance, run.run_id)
    if not pids or any(_running(pid, at) for pid, at in pids.items()):
        return None
    return (
        f"the run's worker is gone: none of the processes it recorded on {host} "
        f"(pid {', '.join(map(str, sorted(pids)))}) is running, and the run never "
        "recorded its end (killed, e.g. SIGKILL or out of memory, or its machine restarted)"
    )


def fail_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark FAILED every STARTED run whose worker is gone (`worker_gone`), then free the
    pool slots that ended runs still hold; one line per failed run, saying which and why.
    What `make run` does at its start, so a killed run ends (and alerts) and stops
    holding its pools with no daemon running."""
    from dagster._core.events import JobFailureData, RunFailureReason

    lines = []
    started = instance.get_run_records(
        filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])
    )
    for record in started:
        why = worker_gone(instance, record.dagster_run)
        run = instance.get_run_by_id(record.dagster_run.run_id)  # it may have ended since
        if why is None or run is None or run.is_finished:
            continue
        launched_by = run.tags.get("e2i/launched_by", "the UI, a schedule or a CLI")
        last = last_event(instance, run.run_id)
        instance.report_run_failed(
            run,
            f"Run {run.run_id} (launched by {launched_by}) marked failed by make run at its "
            f"start: {why}." + (f"\n{last}" if last else ""),
            JobFailureData(error=None, failure_reason=RunFailureReason.UNEXPECTED_TERMINATION),
        )
        lines.append(f"run {run.run_id} ({run.job_name}, launched by {launched_by}): {why}")
    free_slots_of_ended_runs(instance)
    return lines


def free_slots_of_ended_runs(instance: dg.DagsterInstance) -> list[str]:
    """Free the pool slots held by runs that have ended: a worker that died in a step
    never freed its slot, and the pool would stay full for ever. Freed when the run's
    processes are known gone, or it ended longer ago than run monitoring's
    `free_slots_after_run_end_seconds` (what the daemon does). The runs freed."""
    from dagster._core.storage.dagster_run import FINISHED_STATUSES

    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return []
    holding = storage.get_concurrency_run_ids()
    if not holding:
        return []
    grace = instance.run_monitoring_settings.get("free_slots_after_run_end_seconds")
    freed = []
    ended = instance.get_run_records(
        filters=dg.RunsFilter(run_ids=list(holding), statuses=FINISHED_STATUSES)
    )
    for record in ended:
        long_ago = bool(grace and record.end_time and record.end_time + grace < time.time())
        if long_ago or worker_gone(instance, record.dagster_run):
            storage.free_concurrency_slots_for_run(record.dagster_run.run_id)
            freed.append(record.dagster_run.run_id)
    return freed
