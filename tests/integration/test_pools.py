"""One writer at a time: two `feature_refresh` runs started at the same moment, in two
processes, on one instance rendered from the platform's template, take turns at the
online store (pool `online_store`, one slot), and nothing is lost.

Locally: SQLite instance and SQLite online store. Production profile: PostgreSQL
instance (its concurrency tables) and the Redis online store, each test on its own
database and Feast project (its keys are deleted afterwards; nothing is flushed)."""

import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import redis

from e2i_platform.features.materialize import online_timestamps
from e2i_platform.features.specs import VIEWS
from e2i_platform.lib.pools import ONLINE_STORE
from e2i_platform.ops.instance import prepare_instance
from e2i_platform.settings import load_settings

from support import FEATURE_CHAIN, definitions, failed_steps, feast_resource, read_offline, run

REPO = Path(__file__).resolve().parents[2]
STEP = "online_features"

# A refresh run as the schedules launch it (the feature_refresh job, full mode), started
# when the test says go: both processes have imported everything by then, so their
# steps would overlap but for the pool.
REFRESH = """
import sys, time
from pathlib import Path
import dagster as dg
from e2i_platform.definitions import build_definitions
from e2i_platform.ops.feature_refresh import REFRESH_JOB, refresh_run_config
from e2i_platform.settings import load_settings

home, barrier, me = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
job = build_definitions(load_settings()).resolve_job_def(REFRESH_JOB)
with dg.DagsterInstance.from_config(home) as instance:
    (barrier / f"ready-{me}").touch()
    while not (barrier / "go").exists():
        time.sleep(0.01)
    result = job.execute_in_process(
        instance=instance, run_config=refresh_run_config("full"), raise_on_error=False
    )
print("RUN", result.run_id, result.success)
"""


@dataclass
class Step:
    run_id: str
    start: float
    end: float
    blocked: list[float]  # "Step blocked by limit for pool online_store" events


def _step(instance: dg.DagsterInstance, run_id: str) -> Step:
    events = [e for e in instance.all_logs(run_id) if e.dagster_event and e.step_key == STEP]

    def at(kind: dg.DagsterEventType) -> list[float]:
        return [e.timestamp for e in events if e.dagster_event.event_type == kind]

    blocked = [
        e.timestamp
        for e in events
        if e.dagster_event.event_type == dg.DagsterEventType.ENGINE_EVENT
        and f"blocked by limit for pool {ONLINE_STORE}" in (e.message or "")
    ]
    (start,) = at(dg.DagsterEventType.STEP_START)
    (end,) = at(dg.DagsterEventType.STEP_SUCCESS)
    return Step(run_id, start, end, blocked)


def _utc(moment) -> pd.Timestamp:
    stamp = pd.Timestamp(moment)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


@pytest.fixture(params=["local", "prod"])
def profile(request, e2i_home, monkeypatch, tmp_path):
    """(settings, DAGSTER_HOME) of a profile, the instance rendered from its template."""
    if request.param == "prod":
        monkeypatch.setenv("E2I_ENV", "prod")
        monkeypatch.setenv("E2I_SOURCE_POLICY", "auto")  # generated tables, as in prod tests
        monkeypatch.setenv("DAGSTER_PG_URL", request.getfixturevalue("psycopg2_url"))
        url = os.environ.get("E2I_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
        project = f"e2it{uuid.uuid4().hex[:12]}"
        monkeypatch.setenv("REDIS_URL", url)
        monkeypatch.setenv("E2I_FEAST_PROJECT", project)
        client = redis.Redis.from_url(url)
        client.ping()  # no server is a failure, not a skip
    else:
        monkeypatch.delenv("REDIS_URL", raising=False)
    settings = load_settings()
    assert settings.online_store == ("redis" if request.param == "prod" else "sqlite")
    yield settings, prepare_instance(settings, tmp_path / "dagster_home")
    if request.param == "prod":
        keys = list(client.scan_iter(match=f"*{project}".encode(), count=1000))
        if keys:
            client.delete(*keys)


def test_two_refreshes_of_the_online_store_take_turns_and_lose_nothing(profile, tmp_path):
    settings, home = profile
    defs = definitions(settings)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        # Upstream prepared once: offline features and the Feast registry.
        prepared = run(defs, instance, selection=FEATURE_CHAIN - dg.AssetSelection.assets(STEP))
        assert prepared.success, failed_steps(prepared)

        barrier = tmp_path / "barrier"
        barrier.mkdir()
        refreshes = [
            subprocess.Popen(
                [sys.executable, "-c", REFRESH, str(home), str(barrier), str(i)],
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in (1, 2)
        ]
        deadline = time.monotonic() + 120
        while len(list(barrier.glob("ready-*"))) < 2:
            assert time.monotonic() < deadline, "the refresh processes never got ready"
            assert all(p.poll() is None for p in refreshes), [p.communicate() for p in refreshes]
            time.sleep(0.05)
        (barrier / "go").touch()
        outputs = [p.communicate(timeout=300) for p in refreshes]
        runs = [ln.split() for out, _ in outputs for ln in out.splitlines() if ln.startswith("RUN")]
        assert [ok for _, _, ok in runs] == ["True", "True"], outputs

        # Serialized: one step ran after the other had finished, and the later one
        # waited for the slot (Dagster logs it) while the first held it.
        first, second = sorted(
            (_step(instance, run_id) for _, run_id, _ in runs), key=lambda s: s.start
        )
        assert first.end <= second.start, (first, second)
        assert not first.blocked
        assert second.blocked and second.blocked[0] < first.end, (first, second)
        info = instance.event_log_storage.get_concurrency_info(ONLINE_STORE)
        assert info.slot_count == 1 and info.active_slot_count == 0  # limit 1, all freed

        # Nothing lost: both materializations recorded ...
        records = instance.fetch_materializations(dg.AssetKey(STEP), limit=10).records
        assert {r.run_id for r in records} >= {first.run_id, second.run_id}
        # ... every entity of every view is online with its newest event time ...
        feast = feast_resource(defs)
        store = feast.store()
        for view, spec in VIEWS.items():
            offline = read_offline(feast.offline_dir, view)
            newest = offline.groupby(list(spec.join_keys), as_index=False)["event_timestamp"].max()
            online = online_timestamps(store, view, newest)
            assert online.notna().all(), f"{view}: {int(online.isna().sum())} entities missing"
            assert (online == newest["event_timestamp"]).all(), view
        # ... and the registry kept the window the later run recorded.
        store.refresh_registry()
        windows = (
            instance.get_latest_materialization_event(dg.AssetKey(STEP))
            .asset_materialization.metadata["windows"]
            .data
        )
        for view in VIEWS:
            end = _utc(store.get_feature_view(view).most_recent_end_time)
            assert end == _utc(windows[view]["end"]), view


# Two processes claim a one-slot pool at the same moment, round after round, on the
# instance `make run` renders: Dagster's stock SQLite storage let both in (23 of 100
# rounds here); the platform's storage (lib.pool_claims) must admit exactly one.
CLAIMS = """
import sys, time
from pathlib import Path
import dagster as dg
home, barrier, me, rounds = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])

def meet(stage, r):
    (barrier / f"{stage}-{r}-{me}").touch()
    while len(list(barrier.glob(f"{stage}-{r}-*"))) < 2:
        time.sleep(0.001)

with dg.DagsterInstance.from_config(home) as instance:
    storage = instance.event_log_storage
    for r in range(rounds):
        meet("ready", r)
        # As a step does before its claim (dagster's InstanceConcurrencyContext): the
        # first round also races on creating the pool's default slot.
        storage.initialize_concurrency_limit_to_default("race_pool")
        status = storage.claim_concurrency_slot("race_pool", f"run-{me}-{r}", "step")
        print("CLAIM", r, status.is_claimed, flush=True)
        meet("claimed", r)
        storage.free_concurrency_slots_for_run(f"run-{me}-{r}")
        meet("freed", r)
"""


def test_simultaneous_claims_of_a_one_slot_pool_admit_exactly_one(e2i_home, tmp_path):
    from e2i_platform.lib.pool_claims import SerializedClaimsSqliteEventLogStorage

    settings = load_settings()
    assert settings.platform.instance.storage == "sqlite"
    home = prepare_instance(settings)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance.event_log_storage, SerializedClaimsSqliteEventLogStorage)
    rounds = 60
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIMS, str(home), str(barrier), me, str(rounds)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for me in ("a", "b")
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    claimed: dict[int, int] = {}
    for out, _ in outputs:
        for line in out.splitlines():
            _, r, won = line.split()
            claimed[int(r)] = claimed.get(int(r), 0) + (won == "True")
    assert sorted(claimed) == list(range(rounds))
    assert {r: n for r, n in claimed.items() if n != 1} == {}, "rounds with 0 or 2 claims"
    with dg.DagsterInstance.from_config(str(home)) as instance:
        info = instance.event_log_storage.get_concurrency_info("race_pool")
    assert info.slot_count == 1 and info.active_slot_count == 0
