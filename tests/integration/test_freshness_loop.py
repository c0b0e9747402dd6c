"""The freshness sensor heals what a refresh can heal and escalates what it cannot, on a
real instance with a real (private) Redis that is stopped and restarted empty.

Each tick is evaluated as the daemon does (`evaluate_tick`), its freshness result
recorded on the instance, and each refresh it requests executed as the run the daemon
would launch (the request's job, config and tags). The alert sensor reads the same
instance and reaches a real webhook receiver.
"""

from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
import redis
import time_machine

from e2i_platform.settings import load_settings

from receivers import WebhookReceiver
from support import FEATURE_CHAIN, anchor_hours_ago, definitions, latest_metadata, run

FRESHNESS = dg.AssetCheckKey(dg.AssetKey("online_features"), "freshness")


class Ticks:
    """The freshness and alert sensors ticking on one instance, cursors kept."""

    def __init__(self, defs, instance):
        self.defs, self.instance = defs, instance
        self.cursors: dict[str, str | None] = {}

    def tick(self, name: str):
        sensor = self.defs.resolve_sensor_def(name)
        with dg.build_sensor_context(
            instance=self.instance,
            cursor=self.cursors.get(name),
            resources=self.defs.resources,
            definitions=self.defs,
        ) as context:
            result = sensor.evaluate_tick(context)
        self.cursors[name] = result.cursor
        for event in result.asset_events:
            self.instance.report_runless_asset_event(event)  # as the daemon does
        return result

    def freshness(self):
        return self.tick("feature_freshness_sensor")

    def latest(self) -> dg.AssetCheckEvaluation:
        return self.instance.get_latest_asset_check_evaluation_record(FRESHNESS).evaluation

    def launch(self, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
        """The run the daemon would launch for `request`."""
        return self.defs.resolve_job_def("feature_refresh").execute_in_process(
            instance=self.instance,
            resources=self.defs.resources,
            run_config=request.run_config,
            tags=request.tags,
            raise_on_error=False,
        )


@pytest.fixture
def hooks(monkeypatch):
    receiver = WebhookReceiver()
    monkeypatch.setenv("E2I_ALERT_WEBHOOK_URL", receiver.url("/hook"))
    for name in ("E2I_SLACK_WEBHOOK_URL", "E2I_SMTP_HOST"):
        monkeypatch.delenv(name, raising=False)
    yield receiver
    receiver.stop()


def test_a_stopped_redis_is_retried_with_back_off_escalated_then_refilled_when_back(
    e2i_home, instance, monkeypatch, private_redis, hooks
):
    monkeypatch.setenv("REDIS_URL", private_redis.url)
    monkeypatch.setenv("E2I_MAX_RETRIES", "0")  # the step's own retries are not under test
    monkeypatch.setenv("E2I_REFRESH_WAIT_MINUTES", "2")
    anchor_hours_ago(monkeypatch, 0.25)
    defs = definitions(load_settings())
    assert run(defs, instance, selection=FEATURE_CHAIN).success
    ticks = Ticks(defs, instance)
    assert "no stale view" in ticks.freshness().skip_message
    ticks.tick("alert_sensor")  # alerting starts: nothing fails
    assert hooks.received == []

    private_redis.stop()
    start = datetime.now(UTC)
    (request,) = ticks.freshness().run_requests
    assert request.run_config["ops"]["online_features"]["config"]["mode"] == "incremental"
    evaluation = ticks.latest()
    assert not evaluation.passed and evaluation.metadata["stale_kind"].value == "store"
    assert evaluation.metadata["refresh_attempts"].value == 1

    # Another writer of online_features in flight (a main-job run, not a refresh): wait.
    other = instance.create_run_for_job(
        defs.resolve_job_def("e2i_main"),
        asset_selection=frozenset({dg.AssetKey("online_features")}),
        status=dg.DagsterRunStatus.STARTED,
    )
    waiting = ticks.freshness()
    assert not waiting.run_requests
    assert f"run {other.run_id} (e2i_main) writing online_features is STARTED" in (
        waiting.skip_message
    )
    instance.report_run_canceled(other)

    # Attempt 1 fails against the stopped store; attempt 2 waits 2 min, attempt 3 4 min.
    assert not ticks.launch(request).success
    for attempt, wait in ((2, 2), (3, 4)):
        early = ticks.freshness()
        assert not early.run_requests
        assert f"attempt {attempt} of 3 at " in early.skip_message, early.skip_message
        assert "FAILURE" in early.skip_message
        start += timedelta(minutes=wait, seconds=5)
        with time_machine.travel(start, tick=True):
            (request,) = ticks.freshness().run_requests
            assert request.tags["e2i/refresh_attempt"].endswith(f"-{attempt}")
            # Past the first attempt, a full refresh: incremental did not heal it.
            assert request.run_config["ops"]["online_features"]["config"]["mode"] == "full"
            assert not ticks.launch(request).success

    # Three refreshes did not heal: escalated, and no more automatic refreshes.
    with time_machine.travel(start + timedelta(hours=1), tick=True):
        for _ in range(3):
            escalated = ticks.freshness()
            assert not escalated.run_requests
        assert escalated.skip_message.startswith("escalated: 3 refresh(es) did not heal")
        evaluation = ticks.latest()
        assert evaluation.metadata["escalated"].value is True
        assert "escalated: 3 refresh(es)" in evaluation.description
        ticks.tick("alert_sensor")
    kinds = [(d["kind"], d["state"]) for d in hooks.on("/hook")]
    # One page when the store went down, one when the loop gave up; runs paged too.
    assert kinds.count(("freshness", "firing")) == 1, kinds
    assert kinds.count(("escalation", "firing")) == 1, kinds
    (page,) = [d for d in hooks.on("/hook") if d["kind"] == "escalation"]
    assert page["route"] == "page" and page["what"].startswith("escalated: 3 refresh(es)")
    assert any("[store]" in e and "ConnectionError" in e for e in page["evidence"]), page
    # Each failed attempt only notifies: the loop retries it and pages when it escalates.
    attempts = [d for d in hooks.on("/hook") if d["kind"] == "run"]
    assert len(attempts) == 3 and {d["route"] for d in attempts} == {"notify"}, attempts
    assert all(any("refresh attempt" in e for e in d["evidence"]) for d in attempts)

    # Redis comes back empty: serving-stale now (a new state), healed by one incremental
    # refresh that refills every view from what the store holds.
    private_redis.start()
    assert redis.Redis.from_url(private_redis.url).dbsize() == 0
    (request,) = ticks.freshness().run_requests
    assert request.run_config["ops"]["online_features"]["config"]["mode"] == "incremental"
    assert ticks.latest().metadata["stale_kind"].value == "serving"
    assert ticks.latest().metadata["refresh_attempts"].value == 1
    healed = ticks.launch(request)
    assert healed.success
    refilled = latest_metadata(instance, "online_features")["refilled"]
    assert set(refilled) == {
        "patient_features",
        "hcp_features",
        "trigger_features",
        "market_features",
    }
    assert all("missing online" in why for why in refilled.values())
    assert latest_metadata(instance, "online_features")["entities_written"] > 300
    assert "no stale view" in ticks.freshness().skip_message
    assert ticks.latest().passed

    hooks.received.clear()
    for _ in range(3):
        ticks.tick("alert_sensor")
    recovered = [d for d in hooks.on("/hook") if d["state"] == "recovered"]
    assert [d["check"] for d in recovered if d["kind"] != "run"] == ["freshness"]
