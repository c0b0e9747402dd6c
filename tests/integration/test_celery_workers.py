"""Distributed execution on dagster-celery: a worker that dies holding a step hands it to
the other through the machine's Redis (the run's events in PostgreSQL, every value in
the shared stores: tests/cluster.py). That steps of one run go to both workers, and
only through this test's queue, is shown by the whole graph in the distributed lane.

The run is launched the way `make run` launches one (the code location's run launcher,
the executor the location configures), so the Celery path is the product's, not a
test harness's. The queue and every Redis key carry a prefix of this test's own; the
cluster deletes only those keys."""

from __future__ import annotations

import os
import time

import dagster as dg
import pytest
from cluster import cluster

from e2i_platform.contract import INPUT_TABLES
from e2i_platform.ops.instance import prepare_instance
from e2i_platform.settings import load_settings

RUN_SECONDS = 300
SIZES = {"E2I_PATIENTS": "300", "E2I_HCPS": "40", "E2I_SEED": "11"}
RAW = [dg.AssetKey(f"raw_{t}") for t in INPUT_TABLES]


@pytest.fixture
def launcher(tmp_path, monkeypatch):
    """The cluster, with this process as its launching machine (DAGSTER_HOME rendered)."""
    with cluster(tmp_path, SIZES) as c:
        for key in [k for k in os.environ if k.startswith(("E2I_", "MLFLOW_", "OPTUNA_"))]:
            monkeypatch.delenv(key)
        for key, value in c.machine_env("launcher").items():
            monkeypatch.setenv(key, value)
        settings = load_settings()
        home = prepare_instance(settings)
        monkeypatch.setenv("DAGSTER_HOME", str(home))
        yield c, settings, home
        # A run a failed test left going would poll a queue no worker serves, forever.
        with dg.DagsterInstance.from_config(str(home)) as instance:
            for run in instance.get_runs():
                if not run.is_finished:
                    instance.run_launcher.terminate(run.run_id)


def _ran_on(instance, run_id: str) -> dict[str, str]:
    """step key -> the worker dagster-celery says ran it."""
    ran_on = {}
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event and event.is_engine_event and record.step_key:
            worker = event.engine_event_data.metadata.get("Celery worker")
            if worker is not None:
                ran_on[record.step_key] = worker.value.split("@")[0]
    return ran_on


def _launch(instance, on_tick=lambda: None) -> str:
    from e2i_platform.ops.launch import code_location, launch, wait

    with code_location(instance) as (context, location):
        run_id = launch(instance, context, location, RAW, {}, {}, in_process=False)
        deadline = time.monotonic() + RUN_SECONDS

        def tick():
            if time.monotonic() > deadline:
                pytest.fail(f"run {run_id} still going after {RUN_SECONDS} s")
            on_tick()

        wait(instance, run_id, tick)
    return run_id


def test_a_worker_killed_mid_step_hands_the_step_to_the_other_and_the_run_completes(
    launcher, monkeypatch
):
    """SIGKILL one worker (its whole process group) as soon as it has taken a step: the
    task was not acknowledged, so after the redelivery timeout the surviving worker runs
    the step again and the run ends SUCCESS; every published value is intact and from
    this run; a second run on the survivor alone completes too."""
    from e2i_platform.resources.publication import Publications

    c, settings, home = launcher
    # Longer than any step here takes (a fresh worker process imports the location first),
    # or a step still running would be handed out twice. Both sides read it at start.
    c.env["E2I_CELERY_REDELIVERY_SECONDS"] = "30"
    monkeypatch.setenv("E2I_CELERY_REDELIVERY_SECONDS", "30")
    assert load_settings().platform.executor.celery_redelivery_seconds == 30
    c.start_worker("w1")
    c.start_worker("w2")
    c.wait_ready()
    killed = []

    def kill_w1_once_it_holds_a_step():
        if not killed and "Task execute_plan[" in c.logs["w1"].read_text():
            c.kill("w1")
            killed.append(time.monotonic())

    with dg.DagsterInstance.from_config(str(home)) as instance:
        run_id = _launch(instance, kill_w1_once_it_holds_a_step)
        assert killed, "w1 never took a step"
        assert c.workers["w1"].returncode == -9
        run = instance.get_run_by_id(run_id)
        messages = "\n".join(r.message for r in instance.all_logs(run_id) if r.message)
        assert run.status == dg.DagsterRunStatus.SUCCESS, messages[-4000:]
        pubs = Publications.for_settings(settings)
        for key in RAW:
            assert pubs.problem(key.path[0], "parquet", run_id) is None, key

        again = _launch(instance)
        assert instance.get_run_by_id(again).status == dg.DagsterRunStatus.SUCCESS
        assert set(_ran_on(instance, again).values()) == {"w2"}
