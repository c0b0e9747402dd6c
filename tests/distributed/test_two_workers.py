"""Two workers that share nothing local run the whole graph (issue: scale out).

Each worker has an empty scratch directory as HOME and E2I_HOME; everything a step reads
or writes goes through the shared services (PostgreSQL, Redis, the S3-compatible store,
the MLflow server). The run is launched as `make run` launches one, with the code
location's Celery executor. Then a worker is killed mid-run: the run still ends clearly,
nothing published is half-written, and a re-run of what `make run` finds undone
completes on the surviving worker."""

from __future__ import annotations

import os
import time

import dagster as dg
import pytest
from cluster import cluster, files_under

from e2i_platform.ops.instance import prepare_instance
from e2i_platform.resources.publication import Publications
from e2i_platform.settings import load_settings

RUN_SECONDS = 1200
# The default size (every gate must pass: at the suite's 300 patients a region has a
# handful of positives and the fairness gate rightly refuses), with a short search.
SIZES = {"E2I_PATIENTS": "5000", "E2I_HCPS": "400", "E2I_HPO_TRIALS": "6"}


def _all_assets(settings) -> list[dg.AssetKey]:
    from support import definitions

    return sorted(definitions(settings).resolve_asset_graph().get_all_asset_keys())


def _what_make_run_runs(settings, instance) -> list[dg.AssetKey]:
    """The assets `make run`'s planner would materialize now (`ops.reuse.plan_run`)."""
    from e2i_platform.ops.reuse import plan_run

    from support import definitions

    defs = definitions(settings)
    decisions = plan_run(defs, instance, defs.resources["source"], settings)
    return [dg.AssetKey.from_user_string(d.asset) for d in decisions if d.run]


def _launch_and_wait(instance, assets, on_tick=lambda: None) -> str:
    from e2i_platform.ops.launch import code_location, launch, wait

    with code_location(instance) as (context, location):
        run_id = launch(instance, context, location, assets, {}, {}, in_process=False)
        deadline = time.monotonic() + RUN_SECONDS

        def tick():
            if time.monotonic() > deadline:
                instance.run_launcher.terminate(run_id)
                pytest.fail(f"run {run_id} still going after {RUN_SECONDS} s")
            on_tick()

        wait(instance, run_id, tick)
    return run_id


def _workers_of(instance, run_id: str) -> dict[str, set[str]]:
    ran_on: dict[str, set[str]] = {}
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event and event.is_engine_event and record.step_key:
            worker = event.engine_event_data.metadata.get("Celery worker")
            if worker is not None:
                ran_on.setdefault(worker.value.split("@")[0], set()).add(record.step_key)
    return ran_on


def _failed_checks(instance, run_id: str) -> list[str]:
    """Each failed check of the run with what it said (its description and metadata)."""
    failed = []
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event and event.event_type_value == "ASSET_CHECK_EVALUATION":
            evaluation = event.event_specific_data
            if not evaluation.passed:
                said = {k: getattr(v, "value", v) for k, v in evaluation.metadata.items()}
                failed.append(
                    f"{evaluation.asset_key.to_user_string()}.{evaluation.check_name}: "
                    f"{evaluation.description} {said}"
                )
    return failed


def _assert_succeeded(instance, run_id: str) -> None:
    run = instance.get_run_by_id(run_id)
    if run.status != dg.DagsterRunStatus.SUCCESS:
        errors = [
            r.message
            for r in instance.all_logs(run_id)
            if r.dagster_event and r.dagster_event.is_failure
        ]
        pytest.fail(
            f"run {run_id} ended {run.status}: {errors[:5]}; "
            f"failed checks: {_failed_checks(instance, run_id)}"
        )
    assert _failed_checks(instance, run_id) == []


def test_the_whole_graph_on_two_workers_that_share_nothing_local(tmp_path, monkeypatch):
    with cluster(tmp_path, SIZES) as c:
        for key, value in c.machine_env("launcher").items():
            monkeypatch.setenv(key, value)
        for key in [k for k in os.environ if k.startswith(("E2I_", "MLFLOW_", "OPTUNA_"))]:
            if key not in c.env:
                monkeypatch.delenv(key)
        settings = load_settings()
        assert settings.platform.executor.kind == "celery"
        home = prepare_instance(settings)
        monkeypatch.setenv("DAGSTER_HOME", str(home))
        assets = _all_assets(settings)
        c.start_worker("w1")
        c.start_worker("w2")
        c.wait_ready()
        with dg.DagsterInstance.from_config(str(home)) as instance:
            first = _launch_and_wait(instance, assets)
            _assert_succeeded(instance, first)
            ran_on = _workers_of(instance, first)
            assert set(ran_on) == {"w1", "w2"}, ran_on
            materialized = {
                r.dagster_event.asset_key
                for r in instance.all_logs(first)
                if r.dagster_event and r.dagster_event.is_step_materialization
            }
            assert materialized == set(assets)
            # Nothing of any step stayed on a worker's own disk.
            for name in ("w1", "w2"):
                assert files_under(c.scratch(name)) == [], name

            # A worker killed as soon as it holds a step of the next run.
            killed = []

            def kill_w1():
                if not killed and c.logs["w1"].read_text().count("Task execute_plan[") > len(
                    ran_on["w1"]
                ):
                    c.kill("w1")
                    killed.append(time.monotonic())

            second = _launch_and_wait(instance, assets, kill_w1)
            assert killed, "w1 took no step of the second run"
            status = instance.get_run_by_id(second).status
            assert status in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE)
            pubs = Publications.for_settings(settings)
            for key in assets:
                record = pubs.record(key.to_user_string())
                if record is not None:
                    ext = record["path"].rsplit(".", 1)[-1]
                    assert pubs.intact(key.to_user_string(), ext, record), key
                    assert record["run_id"] in (first, second), key

            # The re-run is what `make run` would run now: whatever the killed run left
            # undone or not published (nothing, when the redelivered step completed it).
            rerun = _what_make_run_runs(settings, instance)
            if rerun:
                third = _launch_and_wait(instance, rerun)
                _assert_succeeded(instance, third)
                assert set(_workers_of(instance, third)) == {"w2"}
            assert _what_make_run_runs(settings, instance) == []
        assert files_under(c.scratch("w2")) == []
        # Each worker consumed the queue of this test only.
        for name in ("w1", "w2"):
            assert f"queue {c.queue!r}" in c.logs[name].read_text()
