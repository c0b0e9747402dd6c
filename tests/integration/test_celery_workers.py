"""Distributed execution on dagster-celery: steps of one run go to two `make worker`
processes through the machine's Redis, the run's events land in PostgreSQL.

The run is launched the way `make run` launches one (the code location's run launcher,
the executor the location configures), so the Celery path is the product's, not a
test harness's. The queue and every Redis key carry a prefix of this test's own; the
test deletes only those keys."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest
import redis
from cluster import stop_process_group

from e2i_platform.contract import INPUT_TABLES
from e2i_platform.ops.instance import prepare_instance
from e2i_platform.settings import load_settings

from services import MACHINE_REDIS_URL, REDIS_ENV

WORKER_START_SECONDS = 60
RUN_SECONDS = 300


def start_worker(name: str, env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "e2i_platform.ops.worker", "--name", name, "--concurrency", "1"],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_ready(procs: dict[str, subprocess.Popen], logs: dict[str, Path]) -> None:
    deadline = time.monotonic() + WORKER_START_SECONDS
    waiting = set(procs)
    while waiting and time.monotonic() < deadline:
        for name in list(waiting):
            if procs[name].poll() is not None:
                pytest.fail(f"worker {name} exited: {logs[name].read_text()[-3000:]}")
            if " ready." in logs[name].read_text():
                waiting.discard(name)
        time.sleep(0.3)
    assert not waiting, {n: logs[n].read_text()[-2000:] for n in waiting}


@pytest.fixture
def celery_env(e2i_home, psycopg2_url, monkeypatch, tmp_path):
    queue = f"e2i-test-{uuid.uuid4().hex[:10]}"
    broker = os.environ.get(REDIS_ENV, MACHINE_REDIS_URL)
    monkeypatch.setenv("E2I_ENV", "prod")
    monkeypatch.setenv("E2I_SOURCE_POLICY", "auto")  # generated tables (see test_postgres_instance)
    monkeypatch.setenv("DAGSTER_PG_URL", psycopg2_url)
    monkeypatch.setenv("E2I_EXECUTOR", "celery")
    monkeypatch.setenv("E2I_CELERY_QUEUE", queue)
    monkeypatch.setenv("E2I_CELERY_BROKER", broker)
    monkeypatch.setenv("REDIS_URL", broker)
    settings = load_settings()
    home = prepare_instance(settings, tmp_path / "dagster_home")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    yield settings, home, queue
    # A run a failed test left going would poll a queue no worker serves, forever.
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for run in instance.get_runs():
            if not run.is_finished:
                instance.run_launcher.terminate(run.run_id)
    client = redis.Redis.from_url(broker)
    keys = list(client.scan_iter(match=f"{queue}:*"))
    if keys:
        client.delete(*keys)


def test_steps_of_one_run_execute_on_both_celery_workers(celery_env, tmp_path):
    from e2i_platform.ops.launch import code_location, launch, wait

    settings, home, queue = celery_env
    assert settings.platform.executor.kind == "celery"
    logs = {name: tmp_path / f"{name}.log" for name in ("w1", "w2")}
    workers = {name: start_worker(name, dict(os.environ), logs[name]) for name in logs}
    try:
        wait_ready(workers, logs)
        assets = [dg.AssetKey(f"raw_{t}") for t in INPUT_TABLES]
        with dg.DagsterInstance.from_config(str(home)) as instance:
            with code_location(instance) as (context, location):
                run_id = launch(instance, context, location, assets, {}, {}, in_process=False)
                deadline = time.monotonic() + RUN_SECONDS
                wait(
                    instance,
                    run_id,
                    lambda: (
                        time.monotonic() < deadline
                        or pytest.fail(f"run {run_id} still going after {RUN_SECONDS} s")
                    ),
                )
            run = instance.get_run_by_id(run_id)
            records = instance.all_logs(run_id)
            messages = "\n".join(r.message for r in records if r.message)
            assert run.status == dg.DagsterRunStatus.SUCCESS, messages[-4000:]
            assert run.run_config.get("execution") in (None, {}), run.run_config
            # dagster-celery reports, per step, which worker ran it.
            ran_on: dict[str, str] = {}
            for record in records:
                event = record.dagster_event
                if event and event.is_engine_event and record.step_key:
                    metadata = event.engine_event_data.metadata
                    if "Celery worker" in metadata:
                        ran_on[record.step_key] = metadata["Celery worker"].value
            materialized = {
                r.dagster_event.asset_key.to_user_string()
                for r in records
                if r.dagster_event and r.dagster_event.is_step_materialization
            }
    finally:
        for proc in workers.values():
            stop_process_group(proc, grace=20)
    assert materialized == {f"raw_{t}" for t in INPUT_TABLES}
    assert {f"raw_{t}" for t in INPUT_TABLES} <= set(ran_on), ran_on
    hosts = {host.split("@")[0] for host in ran_on.values()}
    assert hosts == {"w1", "w2"}, ran_on
    # Each worker logged the steps it took, under the queue of this test only.
    for name in ("w1", "w2"):
        assert f"queue {queue!r}" in logs[name].read_text()


def test_a_worker_killed_mid_step_hands_the_step_to_the_other_and_the_run_completes(
    celery_env, tmp_path, monkeypatch
):
    """SIGKILL one worker (its whole process group) as soon as it has taken a step: the
    task was not acknowledged, so after the redelivery timeout the surviving worker runs
    the step again and the run ends SUCCESS; every published value is intact and from
    this run; a second run on the survivor alone completes too."""
    from e2i_platform.ops.launch import code_location, launch, wait
    from e2i_platform.resources.publication import Publications

    settings, home, queue = celery_env
    # Longer than any step here takes (a fresh worker process imports the location first),
    # or a step still running would be handed out twice.
    monkeypatch.setenv("E2I_CELERY_REDELIVERY_SECONDS", "30")
    assert load_settings().platform.executor.celery_redelivery_seconds == 30
    logs = {name: tmp_path / f"{name}.log" for name in ("w1", "w2")}
    workers = {name: start_worker(name, dict(os.environ), logs[name]) for name in logs}
    assets = [dg.AssetKey(f"raw_{t}") for t in INPUT_TABLES]
    try:
        wait_ready(workers, logs)
        with (
            dg.DagsterInstance.from_config(str(home)) as instance,
            code_location(instance) as (context, location),
        ):
            run_id = launch(instance, context, location, assets, {}, {}, in_process=False)
            deadline = time.monotonic() + RUN_SECONDS
            killed_at = None

            def kill_w1_once_it_holds_a_step():
                nonlocal killed_at
                if time.monotonic() > deadline:
                    pytest.fail(f"run {run_id} still going after {RUN_SECONDS} s")
                if killed_at is None and "Task execute_plan[" in logs["w1"].read_text():
                    os.killpg(workers["w1"].pid, 9)
                    killed_at = time.monotonic()

            wait(instance, run_id, kill_w1_once_it_holds_a_step)
            assert killed_at is not None, "w1 never took a step"
            assert workers["w1"].wait(10) == -9
            run = instance.get_run_by_id(run_id)
            messages = "\n".join(r.message for r in instance.all_logs(run_id) if r.message)
            assert run.status == dg.DagsterRunStatus.SUCCESS, messages[-4000:]
            pubs = Publications(settings.home / "warehouse")
            for key in assets:
                assert pubs.problem(key.path[0], "parquet", run_id) is None, key

            again = launch(instance, context, location, assets, {}, {}, in_process=False)
            wait(instance, again)
            assert instance.get_run_by_id(again).status == dg.DagsterRunStatus.SUCCESS
            workers_of_again = {
                r.dagster_event.engine_event_data.metadata["Celery worker"].value
                for r in instance.all_logs(again)
                if r.dagster_event
                and r.dagster_event.is_engine_event
                and "Celery worker" in r.dagster_event.engine_event_data.metadata
            }
            assert {w.split("@")[0] for w in workers_of_again} == {"w2"}
    finally:
        for proc in workers.values():
            stop_process_group(proc, grace=20)
