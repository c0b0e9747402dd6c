"""The feature store on a real Redis: materialization, freshness, the backfill guard,
and an unreachable store reported as unknown (never fresh).

Each test uses its own Feast project, so its keys (serialized entity key + project)
are its own; it deletes exactly those keys afterwards and flushes nothing."""

import os
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import dagster as dg
import pandas as pd
import pytest
import redis

from e2i_platform.features.materialize import online_timestamps
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
    read_offline,
    run,
)

DEFAULT_REDIS = "redis://127.0.0.1:6379/0"


def _own_keys(client: redis.Redis, project: str) -> list[bytes]:
    return list(client.scan_iter(match=f"*{project}".encode(), count=1000))


@pytest.fixture
def redis_project(monkeypatch) -> Iterator[tuple[str, str]]:
    """(REDIS_URL, Feast project) on the test run's Redis; our keys are removed after."""
    url = os.environ.get("E2I_TEST_REDIS_URL", DEFAULT_REDIS)
    project = f"e2it{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("REDIS_URL", url)
    monkeypatch.setenv("E2I_FEAST_PROJECT", project)
    client = redis.Redis.from_url(url)
    client.ping()  # no server is a failure here, not a skip
    yield url, project
    keys = _own_keys(client, project)
    if keys:
        client.delete(*keys)
    assert not _own_keys(client, project)


def test_redis_materialization_freshness_and_backfill_guard(
    e2i_home, instance, monkeypatch, redis_project
):
    url, project = redis_project
    anchor_hours_ago(monkeypatch, 0.5)
    settings = load_settings()
    assert settings.online_store == "redis"  # auto: REDIS_URL is set
    defs = definitions(settings)
    result = run(defs, instance, selection=FEATURE_CHAIN)
    assert result.success, failed_steps(result)
    check = evaluations(result)["online_features.freshness"]
    assert check.passed, check.description
    assert latest_metadata(instance, "online_features")["store"]["online_store"] == "redis"
    assert _own_keys(redis.Redis.from_url(url), project)

    feast = feast_resource(defs)
    store = feast.store()
    offline = read_offline(feast.offline_dir, "patient_features")
    newest = offline[offline["event_timestamp"] == offline["event_timestamp"].max()]
    sample = newest.head(20)
    # Served values are the newest offline values.
    served = store.get_online_features(
        features=["patient_features:events_total", "patient_features:insurance_type"],
        entity_rows=[{"patient_id": p} for p in sample["patient_id"]],
    ).to_dict()
    assert served["events_total"] == sample["events_total"].tolist()
    assert served["insurance_type"] == sample["insurance_type"].tolist()
    assert assert_service_reader_matches_feast(feast) > 500

    before = online_timestamps(store, "patient_features", sample[["patient_id"]])
    _, per_view = backfill_old_window(defs, instance, offline, days_back=45)
    assert per_view["patient_features"]["entities_written"] == 0
    assert per_view["patient_features"]["skipped_not_newer"] > 0
    pd.testing.assert_series_equal(
        before, online_timestamps(store, "patient_features", sample[["patient_id"]])
    )


def test_stopped_redis_makes_freshness_unknown_and_blocking(
    e2i_home, instance, monkeypatch, private_redis
):
    url = private_redis.url
    monkeypatch.setenv("REDIS_URL", url)
    anchor_hours_ago(monkeypatch, 0.5)
    defs = definitions(load_settings())
    assert run(defs, instance, selection=FEATURE_CHAIN).success

    private_redis.stop()
    result = run(defs, instance, selection=dg.AssetSelection.checks_for_assets("online_features"))
    check = evaluations(result)["online_features.freshness"]
    assert check.passed is False and check.severity == dg.AssetCheckSeverity.ERROR
    views = check.metadata["views"].data
    assert {v["status"] for v in views.values()} == {"unknown"}
    assert all(v["reason"].startswith("online store: ConnectionError") for v in views.values())
    # The sensor treats unknown like stale: it asks for a refresh.
    sensor = defs.resolve_sensor_def("feature_freshness_sensor")
    with dg.build_sensor_context(instance=instance, resources=defs.resources) as context:
        tick = sensor.evaluate_tick(context)
    assert len(tick.run_requests) == 1

    # Materializing against the stopped store fails (a transient failure, retried first)
    # and leaves the registry's coverage clock where it was: nothing was written.
    store = feast_resource(defs).store()
    coverage = {v: store.get_feature_view(v).most_recent_end_time for v in views}
    monkeypatch.setenv("E2I_MAX_RETRIES", "1")
    monkeypatch.setenv("E2I_RETRY_WAIT_SECONDS", "0.1")
    defs = definitions(load_settings())
    refresh = run(defs, instance, selection=["online_features"])
    assert not refresh.success
    message = failed_steps(refresh)["online_features"]
    assert "online_features: transient failure persisted after 2 attempts" in message, message
    assert f"connecting to 127.0.0.1:{url.rsplit(':', 1)[1].split('/')[0]}" in message
    assert sum(e.event_type_value == "STEP_UP_FOR_RETRY" for e in refresh.all_events) == 1
    store = feast_resource(defs).store()
    assert {v: store.get_feature_view(v).most_recent_end_time for v in views} == coverage


def test_refused_credentials_fail_at_once_naming_the_store(e2i_home, instance, monkeypatch):
    url = os.environ.get("E2I_TEST_REDIS_URL", DEFAULT_REDIS)
    parts = urlsplit(url)
    monkeypatch.setenv("REDIS_URL", parts._replace(netloc=f"e2i:wrong@{parts.netloc}").geturl())
    monkeypatch.setenv("E2I_ONLINE_STORE", "redis")
    feast = feast_resource(definitions(load_settings()))
    with pytest.raises(dg.Failure) as refused:
        feast.ping_online_store()
    where = f"{parts.hostname}:{parts.port or 6379}/{parts.path.lstrip('/') or 0}"
    assert refused.value.description.startswith(
        f"feature store: the Redis online store at {where} refused the credentials in REDIS_URL"
    )
    assert "wrong" not in refused.value.description  # the password is never shown
