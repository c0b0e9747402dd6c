"""`make run`'s run, launched as the UI launches one.

The run is created from the code location that `workspace.yaml` declares (the one
`make dev` serves), so it carries that location's origin: the UI lists it on the
Overview timeline under the location and can re-execute it. It is launched by the
instance's run launcher, straight past the run queue (no daemon is needed, and the
person at the terminal is waiting for it), and executed by a run worker process with
the in-process executor: one import of the code for the whole run, and each step's
output handed only to its IO manager.

Dagster has no public API for "create a run of a remote job with an asset selection";
this follows what its GraphQL launch mutation does (`create_valid_pipeline_run`).
The instance's launcher is `ops.run_monitoring.WatchedRunLauncher`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from e2i_platform.ops.jobs import MAIN_JOB

WORKSPACE = Path(__file__).resolve().parents[2] / "workspace.yaml"
IN_PROCESS = {"execution": {"config": {"in_process": {}}}}
POLL_SECONDS = 0.25


@contextmanager
def code_location(instance: dg.DagsterInstance, workspace: Path = WORKSPACE):
    """The workspace's only code location, served by a code server of its own (the run
    launcher hands runs to a code server); shut down, after its runs end, on exit."""
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget

    target = WorkspaceFileTarget(paths=[str(workspace)])
    with WorkspaceProcessContext(instance, target, code_server_log_level="WARNING") as process:
        context = process.create_request_context()
        ((name, entry),) = context.get_code_location_entries().items()
        if entry.code_location is None:
            error = entry.load_error
            raise RuntimeError(
                f"code location {name} (from {workspace}) did not load: "
                f"{error.to_string() if error else 'no error recorded'}"
            )
        yield context, entry.code_location


def launch(
    instance: dg.DagsterInstance,
    context,
    location,
    assets: Iterable[dg.AssetKey],
    run_config: dict,
    tags: dict[str, str],
    in_process: bool = True,
) -> str:
    """Create a run of the main job for `assets` (with their checks) and launch it; its
    run id. `in_process=False` keeps the job's own executor (Celery: the steps go to the
    workers)."""
    from dagster._core.definitions.selector import JobSubsetSelector
    from dagster._core.storage.dagster_run import DagsterRunStatus

    (repository,) = location.get_repositories().values()
    selector = JobSubsetSelector(
        location_name=location.name,
        repository_name=repository.name,
        job_name=MAIN_JOB,
        op_selection=None,
        asset_selection=set(assets),
    )
    job = location.get_job(selector)
    config = run_config | IN_PROCESS if in_process else run_config
    plan = location.get_execution_plan(
        job, config, step_keys_to_execute=None, known_state=None, instance=instance
    )
    run = instance.create_run(
        job_name=MAIN_JOB,
        run_id=None,
        run_config=config,
        resolved_op_selection=None,
        step_keys_to_execute=plan.execution_plan_snapshot.step_keys_to_execute,
        op_selection=None,
        status=DagsterRunStatus.NOT_STARTED,
        root_run_id=None,
        parent_run_id=None,
        tags={**job.tags, **tags},
        job_snapshot=job.job_snapshot,
        execution_plan_snapshot=plan.execution_plan_snapshot,
        parent_job_snapshot=job.parent_job_snapshot,
        remote_job_origin=job.get_remote_origin(),
        job_code_origin=job.get_python_origin(),
        asset_selection=frozenset(selector.asset_selection),
        asset_check_selection=None,
        asset_graph=repository.asset_graph,
    )
    instance.launch_run(run.run_id, context)
    return run.run_id


def wait(
    instance: dg.DagsterInstance, run_id: str, tick: Callable[[], None] = lambda: None
) -> None:
    """Until the run has ended; `tick` between polls. Interrupted, the run is terminated
    (it would otherwise go on without anyone watching)."""
    try:
        while not instance.get_run_by_id(run_id).is_finished:
            tick()
            time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        instance.run_launcher.terminate(run_id)
        raise


@dataclass(frozen=True)
class RunOutcome:
    """What the summary needs of a finished run, read from the instance's event log."""

    run_id: str
    success: bool
    events: list  # DagsterEvent, in order

    @classmethod
    def read(cls, instance: dg.DagsterInstance, run_id: str) -> RunOutcome:
        run = instance.get_run_by_id(run_id)
        events = [e.dagster_event for e in instance.all_logs(run_id) if e.dagster_event]
        return cls(run_id, run.status == dg.DagsterRunStatus.SUCCESS, events)

    def materialized(self) -> list[str]:
        return sorted(
            e.asset_key.to_user_string() for e in self.events if e.is_step_materialization
        )

    def check_evaluations(self) -> list:
        return [
            e.event_specific_data
            for e in self.events
            if e.event_type_value == "ASSET_CHECK_EVALUATION"
        ]

    def step_failures(self) -> list:
        return [e for e in self.events if e.is_step_failure]

    def run_failure(self) -> str | None:
        """The run-level failure message (e.g. the run worker could not start), if any."""
        for e in self.events:
            if e.event_type_value == "PIPELINE_FAILURE" and e.message:
                return e.message
        return None
