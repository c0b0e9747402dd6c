"""A `make run` killed with SIGKILL (its whole process group: the command, the code
server and the run worker) leaves its run STARTED and its pool slot taken; nothing in
Dagster's default setup ever ends it. Here it ends FAILED, with a RUN_FAILURE event that
says why (and pages), in both ways the platform provides:

- the next `make run`, at its start, with no daemon running; its own run then gets the
  pool slot the dead run held;
- the daemon's run monitoring (`dagster-daemon run`, as `make dev` runs it), which also
  frees the dead run's slots.

A live run is never touched: checked while the first run is still running."""

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import pytest

from e2i_platform.lib.pools import ONLINE_STORE
from e2i_platform.ops.run_monitoring import fail_dead_runs, worker_gone
from e2i_platform.settings import load_settings

from receivers import WebhookReceiver
from support import definitions

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MAKE_RUN = [sys.executable, "-m", "e2i_platform.ops.run"]


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "E2I_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}


def _wait(condition: Callable[[], object], seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out after {seconds:.0f} s waiting for {what}"
        time.sleep(0.1)
    return value


def _holder(instance: dg.DagsterInstance) -> set[str]:
    """The runs holding a slot of the online store's pool."""
    return instance.event_log_storage.get_concurrency_info(ONLINE_STORE).active_run_ids


def _started(instance: dg.DagsterInstance, run_id: str, step: str) -> bool:
    starts = instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START)
    return any(e.step_key == step for e in starts)


def _failure(instance: dg.DagsterInstance, run_id: str) -> str:
    (entry,) = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    return entry.message


@pytest.fixture
def killed_make_run(e2i_home, tmp_path):
    """A `make run` SIGKILLed, with its code server and run worker, while its run holds
    the online store's slot (feature_registry running): (instance, run id)."""
    log = open(tmp_path / "make_run.log", "w")  # noqa: SIM115 (closed below)
    command = subprocess.Popen(
        MAKE_RUN,
        cwd=REPO,
        env=_env(e2i_home),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, as a terminal gives it
    )
    try:
        # Its instance exists once it has planned (two processes creating one SQLite
        # storage at once can collide).
        planned = lambda: "E2I: running" in (tmp_path / "make_run.log").read_text()  # noqa: E731
        _wait(planned, 120, "make run to plan")
        with dg.DagsterInstance.from_config(str(e2i_home / "dagster")) as instance:
            (run_id,) = _wait(lambda: _holder(instance), 180, "the run to take the slot")
            _wait(lambda: _started(instance, run_id, "feature_registry"), 30, "its step")
            run = instance.get_run_by_id(run_id)
            assert run.tags["e2i/launched_by"] == "make run"

            # While it lives, neither the make run sweep nor monitoring's check fails it.
            assert fail_dead_runs(instance) == []
            health = instance.run_launcher.check_run_worker_health(run)
            assert health.status.value == "RUNNING", health
            assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED

            os.killpg(command.pid, signal.SIGKILL)
            command.wait(timeout=30)
            _wait(lambda: worker_gone(instance, run), 30, "the run's processes to end")
            # What used to happen, for ever: STARTED, and the pool slot taken.
            time.sleep(2)
            assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED
            assert _holder(instance) == {run_id}
            yield instance, run_id
    finally:
        with contextlib.suppress(ProcessLookupError):  # its group, if a test failed early
            os.killpg(command.pid, signal.SIGKILL)
        command.wait(timeout=30)
        log.close()


def test_the_next_make_run_fails_the_dead_run_frees_its_slot_and_it_pages(
    killed_make_run, e2i_home, monkeypatch
):
    instance, dead = killed_make_run
    # A run of the pool the dead run holds: it would wait for ever for that slot.
    again = subprocess.run(
        [*MAKE_RUN, "--select", "feature_registry"],
        cwd=REPO,
        env=_env(e2i_home),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"E2I: marked FAILED run {dead} (e2i_main, launched by make run)" in again.stdout

    assert instance.get_run_by_id(dead).status == dg.DagsterRunStatus.FAILURE
    message = _failure(instance, dead)
    assert f"Run {dead} (launched by make run) marked failed by make run at its start" in message
    assert re.search(r"the run's worker is gone: none of the processes .* \(pid \d+", message)
    assert "last recorded event: " in message and "of step feature_registry" in message
    assert dead not in _holder(instance)
    (now,) = instance.get_runs(limit=1)
    assert now.run_id != dead and now.status == dg.DagsterRunStatus.SUCCESS

    # The failure reaches a person: the alert sensor pages on the RUN_FAILURE event.
    hooks = WebhookReceiver()
    try:
        monkeypatch.setenv("E2I_ALERT_WEBHOOK_URL", hooks.url("/hook"))
        defs = definitions(load_settings())
        sensor = defs.resolve_sensor_def("alert_sensor")
        with dg.build_sensor_context(
            instance=instance, resources=defs.resources, definitions=defs
        ) as context:
            sensor.evaluate_tick(context)
        pages = [body for body in hooks.on("/hook") if dead in str(body)]
        assert len(pages) == 1 and "worker is gone" in str(pages[0]), hooks.received
    finally:
        hooks.stop()


def test_the_daemon_fails_the_dead_run_and_frees_its_slot(killed_make_run, e2i_home, tmp_path):
    instance, dead = killed_make_run
    # The rendered instance, with monitoring polling every second instead of 30 s.
    config = e2i_home / "dagster" / "dagster.yaml"
    text = config.read_text().replace("poll_interval_seconds: 30", "poll_interval_seconds: 1")
    config.write_text(text.replace("run_end_seconds: 30", "run_end_seconds: 1"))
    log = open(tmp_path / "daemon.log", "w")  # noqa: SIM115 (closed below)
    daemon = subprocess.Popen(
        [str(BIN / "dagster-daemon"), "run", "--empty-workspace"],
        cwd=REPO,
        env=_env(e2i_home),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        failed = lambda: instance.get_run_by_id(dead).status == dg.DagsterRunStatus.FAILURE  # noqa: E731
        _wait(failed, 90, "the daemon to fail the run")
        _wait(lambda: dead not in _holder(instance), 30, "the daemon to free the slot")
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait(timeout=15)
        log.close()
    message = _failure(instance, dead)
    assert "Detected run worker status FAILED: 'the run's worker is gone:" in message
    assert f"Marking run {dead} as failed." in message
    assert "last recorded event: " in message and "of step feature_registry" in message


def test_only_a_run_whose_recorded_processes_are_all_gone_counts_as_dead(instance):
    """The rule both ways apply, on runs whose processes this test controls: any live
    process keeps a run alive; a zombie, an exited process and a pid now used by a later
    process do not; nothing recorded, or another host, is never judged."""
    import socket

    import psutil
    from dagster._core.events import EngineEventData

    from e2i_platform.ops.run_monitoring import WORKER_HOST_TAG, _running

    job = dg.define_asset_job("watched").resolve(
        asset_graph=dg.Definitions(assets=[dg.AssetSpec("x")]).resolve_asset_graph()
    )

    def started(pids: list[int], host: str | None = None) -> dg.DagsterRun:
        tags = {WORKER_HOST_TAG: host} if host else {}
        run = instance.create_run_for_job(job, status=dg.DagsterRunStatus.STARTED, tags=tags)
        for pid in pids:
            instance.report_engine_event(f"process {pid}", run, EngineEventData.in_process(pid))
        return run

    exited = subprocess.Popen(["true"])
    exited.wait()
    zombie = subprocess.Popen(["true"])  # never waited for: a zombie once it exits
    _wait(lambda: psutil.Process(zombie.pid).status() == psutil.STATUS_ZOMBIE, 10, "zombie")
    alive = os.getpid()

    dead = started([exited.pid, zombie.pid])
    live_step = started([exited.pid, alive])  # its worker gone, a step process still up
    elsewhere = started([exited.pid], host="another-host")
    nothing = started([])
    here = started([exited.pid], host=socket.gethostname())

    assert f"pid {', '.join(map(str, sorted([exited.pid, zombie.pid])))})" in worker_gone(
        instance, dead
    )
    assert worker_gone(instance, here) is not None
    for run in (live_step, elsewhere, nothing):
        assert worker_gone(instance, run) is None, run.run_id
    # A live pid recorded before this process was created is another process's number.
    created = psutil.Process(alive).create_time()
    assert _running(alive, created) and not _running(alive, created - 60)

    lines = fail_dead_runs(instance)
    assert sorted(line.split()[1] for line in lines) == sorted([dead.run_id, here.run_id])
    status = {r.run_id: r.status for r in instance.get_runs()}
    assert status[dead.run_id] == status[here.run_id] == dg.DagsterRunStatus.FAILURE
    for run in (live_step, elsewhere, nothing):
        assert status[run.run_id] == dg.DagsterRunStatus.STARTED
    zombie.wait()
