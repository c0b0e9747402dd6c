"""The feature store on SQLite, through real Dagster runs and a real Feast store:
freshness on data of known age, the gate blocking downstream, the sensor, windows
and the backfill guard, and the Feast CLI on the same repository."""

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from e2i_platform.features.materialize import online_timestamps
from e2i_platform.features.specs import VIEWS
from e2i_platform.settings import load_settings

from support import (
    FEATURE_CHAIN,
    anchor_hours_ago,
    assert_service_reader_matches_feast,
    backfill_old_window,
    definitions,
    evaluations,
    failed_steps,
    feast_resource,
    latest_metadata,
    materialized,
    online_config,
    read_offline,
    run,
)

REPO = Path(__file__).resolve().parents[2]


def _defs():
    return definitions(load_settings())


def _freshness(result) -> dg.AssetCheckEvaluation:
    return evaluations(result)["online_features.freshness"]


def _sensor_result(defs, instance):
    sensor = defs.resolve_sensor_def("feature_freshness_sensor")
    with dg.build_sensor_context(instance=instance, resources=defs.resources) as context:
        return sensor.evaluate_tick(context)


def test_stale_source_data_block_downstream_and_are_alerted_not_refreshed(
    e2i_home, instance, monkeypatch
):
    anchor_hours_ago(monkeypatch, hours_ago=3)  # events 3 h old, max age 2 h
    defs = _defs()
    result = run(
        defs, instance, selection=FEATURE_CHAIN | dg.AssetSelection.assets("training_dataset")
    )
    check = _freshness(result)
    assert check.passed is False and check.severity == dg.AssetCheckSeverity.ERROR
    views = check.metadata["views"].data
    assert views["patient_features"]["status"] == "stale"
    assert 2.9 < views["patient_features"]["serving_max_age_hours"] < 3.2
    assert 2.9 < views["patient_features"]["source_age_hours"] < 3.2
    assert views["patient_features"]["coverage_age_hours"] < 0.1  # just materialized
    assert views["patient_features"]["missing"] == 0
    assert views["patient_features"]["sampled"] == min(200, views["patient_features"]["sampled"])
    assert views["market_features"]["max_age_hours"] == 36  # the per-view override
    assert "online_features" in materialized(result)
    assert "training_dataset" not in materialized(result)

    assert views["patient_features"]["kind"] == "source"
    assert check.metadata["stale_kind"].value == "source"

    # The offline data themselves are 3 h old: a refresh cannot help, so none is requested
    # (the result pages through the alert sensor), tick after tick.
    for _ in range(3):
        tick = _sensor_result(defs, instance)
        assert not tick.run_requests
        assert "source-stale (the offline data are old)" in tick.skip_message
    (event,) = tick.asset_events
    assert event.metadata["refresh_attempts"].value == 0
    assert event.metadata["stale_kind"].value == "source"


def test_a_store_that_lost_its_data_is_refilled_by_an_incremental_refresh(
    e2i_home, instance, monkeypatch
):
    import sqlite3

    anchor_hours_ago(monkeypatch, hours_ago=0.5)
    defs = _defs()
    assert run(defs, instance, selection=FEATURE_CHAIN).success
    online_db = e2i_home / "feast" / "online_store.db"
    with sqlite3.connect(online_db) as db:
        tables = [t for (t,) in db.execute("select name from sqlite_master where type='table'")]
        for table in tables:
            db.execute(f'delete from "{table}"')  # the online store lost everything
    # The registry's coverage clock is recent, so a plain incremental window would be
    # nearly empty; what the store holds decides.
    tick = _sensor_result(defs, instance)
    (request,) = tick.run_requests
    assert request.run_config == online_config("incremental")
    (event,) = tick.asset_events
    assert event.metadata["stale_kind"].value == "serving"
    refill = run(defs, instance, selection=["online_features"], run_config=request.run_config)
    assert refill.success, failed_steps(refill)
    meta = latest_metadata(instance, "online_features")
    assert set(meta["refilled"]) == {v for v in event.metadata["views"].data}
    assert _freshness(refill).passed, _freshness(refill).description
    assert "no stale view" in _sensor_result(defs, instance).skip_message


def test_fresh_data_pass_and_a_backfill_never_goes_backwards(e2i_home, instance, monkeypatch):
    anchor_hours_ago(monkeypatch, hours_ago=0.5)  # 30 min old
    defs = _defs()
    result = run(
        defs, instance, selection=FEATURE_CHAIN | dg.AssetSelection.assets("training_dataset")
    )
    check = _freshness(result)
    assert check.passed is True, check.description
    assert {v["status"] for v in check.metadata["views"].data.values()} == {"fresh"}
    assert check.metadata["dagster/fresh_until_timestamp"].value > datetime.now(UTC).timestamp()
    assert "training_dataset" in materialized(result)
    assert evaluations(result)["training_dataset.no_leakage"].passed
    assert "no stale view" in _sensor_result(defs, instance).skip_message

    feast = feast_resource(defs)
    assert assert_service_reader_matches_feast(feast) > 500
    store = feast.store()
    offline = read_offline(feast.offline_dir, "patient_features")
    entities = offline[["patient_id"]].drop_duplicates().head(50)
    before = online_timestamps(store, "patient_features", entities)
    newest = offline["event_timestamp"].max()
    assert (before == newest).all()

    # Backfill an old window: every entity has a newer value online, nothing is replaced.
    old_end, per_view = backfill_old_window(defs, instance, offline, days_back=60)
    patient = per_view["patient_features"]
    assert patient["end"] == old_end.isoformat()
    assert patient["entities_in_window"] > 0
    assert patient["entities_written"] == 0
    assert patient["skipped_not_newer"] == patient["entities_in_window"]
    after = online_timestamps(store, "patient_features", entities)
    pd.testing.assert_series_equal(before, after)
    # Coverage keeps the newest window end: a backfill does not move it back.
    store.refresh_registry()
    coverage = store.get_feature_view("patient_features").most_recent_end_time
    assert pd.Timestamp(coverage) > pd.Timestamp(old_end)

    # Control: Feast's own SQLite materialization of that window does go backwards.
    store.materialize(
        start_date=offline["event_timestamp"].min().to_pydatetime(),
        end_date=old_end.to_pydatetime(),
        feature_views=["patient_features"],
    )
    regressed = online_timestamps(store, "patient_features", entities)
    assert (regressed < before).any()


def test_never_materialized_is_unknown_and_blocks(e2i_home, instance, monkeypatch):
    anchor_hours_ago(monkeypatch, hours_ago=0.25)
    defs = _defs()
    upto_registry = FEATURE_CHAIN - dg.AssetSelection.assets("online_features")
    assert run(defs, instance, selection=upto_registry).success
    only_check = run(
        defs, instance, selection=dg.AssetSelection.checks_for_assets("online_features")
    )
    check = _freshness(only_check)
    assert check.passed is False and check.severity == dg.AssetCheckSeverity.ERROR
    views = check.metadata["views"].data
    assert {v["status"] for v in views.values()} == {"unknown"}
    assert {v["reason"] for v in views.values()} == {"never materialized"}
    assert "dagster/fresh_until_timestamp" not in check.metadata


def test_window_ending_in_the_future_is_refused(e2i_home, instance, monkeypatch):
    anchor_hours_ago(monkeypatch, hours_ago=0.25)
    defs = _defs()
    assert run(defs, instance, selection=FEATURE_CHAIN).success
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    result = run(
        defs,
        instance,
        selection=dg.AssetSelection.assets("online_features"),
        run_config=online_config("window", "2026-01-01T00:00:00", future),
    )
    assert not result.success
    assert "is in the future" in failed_steps(result)["online_features"]


def test_feast_cli_plans_the_same_repository(e2i_home, instance, monkeypatch, tmp_path):
    """The plain Feast CLI on the default home (`.e2i/` next to feature_repo/, here a copy
    of the repository's layout) with no platform variable set, and `make feast` on any
    home: both list the views and plan no change to what the asset applied and
    materialized (Feast compares materialization intervals and the registry's record
    of the online tables when it plans)."""
    import shutil

    anchor_hours_ago(monkeypatch, hours_ago=0.25)
    defs = _defs()
    assert run(defs, instance, selection=FEATURE_CHAIN).success
    layout = tmp_path / "checkout"
    shutil.copytree(REPO / "feature_repo", layout / "feature_repo")
    (layout / ".e2i").symlink_to(e2i_home, target_is_directory=True)
    plain = {k: v for k, v in os.environ.items() if not k.startswith("E2I_")}
    feast = str(Path(sys.executable).parent / "feast")
    commands = {
        "plain feast in feature_repo/": (
            [feast, "feature-views", "list"],
            layout / "feature_repo",
            plain,
        ),
        "plain feast -c from the root": ([feast, "-c", "feature_repo", "plan"], layout, plain),
        "make feast": (
            [sys.executable, "-m", "e2i_platform.features.cli", "plan"],
            REPO,
            {**plain, "E2I_HOME": str(e2i_home)},
        ),
    }
    for what, (command, cwd, env) in commands.items():
        done = subprocess.run(
            command, cwd=cwd, env=env, capture_output=True, text=True, timeout=180
        )
        assert done.returncode == 0, f"{what}: {done.stderr[-2000:]}"
        if command[-1] == "list":
            assert all(view in done.stdout for view in VIEWS), (what, done.stdout)
        else:
            # The repository the CLI parses is the one the asset applied: no object changes.
            assert "No changes to registry" in done.stdout, (what, done.stdout)
        if what == "make feast":
            # The online tables as the asset recorded them (the copied layout names them
            # by another path; on the real default home the paths agree: unit-tested).
            assert "No changes to infrastructure" in done.stdout, (what, done.stdout)
    assert "E2I_FEAST_REDIS" not in (e2i_home / "feast" / "feature_store.yaml").read_text()
    _assert_feast_ui_serves(feast, layout / "feature_repo", plain, tmp_path / "feast_ui.log")


def _assert_feast_ui_serves(feast: str, repo: Path, env: dict, log: Path) -> None:
    """`feast ui` starts and serves its page (it imports grpc_reflection, which Feast does
    not require: the lock has it)."""
    import socket
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = log.open("w")
    ui = subprocess.Popen(
        [feast, "ui", "-h", "127.0.0.1", "-p", str(port)],
        cwd=repo,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as page:
                    assert page.status == 200 and b"<html" in page.read().lower()
                break
            except OSError as error:
                if ui.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        f"feast ui did not serve: {log.read_text()[-2000:]}"
                    ) from error
                time.sleep(0.5)
    finally:
        ui.terminate()
        ui.wait(timeout=30)
        out.close()


@pytest.mark.parametrize("hours_ago", [0.25])
def test_registry_hash_is_stable_across_reapply(e2i_home, instance, monkeypatch, hours_ago):
    anchor_hours_ago(monkeypatch, hours_ago=hours_ago)
    defs = _defs()
    registry = FEATURE_CHAIN - dg.AssetSelection.assets("online_features")
    assert run(defs, instance, selection=registry).success
    first = latest_metadata(instance, "feature_registry")["registry_hash"]
    again = run(defs, instance, selection=dg.AssetSelection.assets("feature_registry"))
    assert again.success
    assert latest_metadata(instance, "feature_registry")["registry_hash"] == first
