"""The freshness sensor's decision on a real instance: which views a refresh can help,
which runs count as writers of the online store, the back-off and the escalation.
(The whole loop against a stopped Redis: tests/integration/test_freshness_loop.py.)"""

import dagster as dg

from e2i_platform.features.freshness import ViewFreshness
from e2i_platform.ops.freshness_sensor import decide, writes_online_features
from e2i_platform.settings import load_settings
from e2i_platform.settings.models import RefreshAttempts

from support import definitions

POLICY = RefreshAttempts(attempts=2, first_wait_minutes=10)


def _view(view: str, status: str, source_age: float = 0.2, reason: str = "r") -> ViewFreshness:
    return ViewFreshness(view, status, reason, 2.0, 1.0, source_age_hours=source_age)


def test_warning_and_source_stale_views_are_never_refreshed(instance):
    results = [_view("a", "warning"), _view("b", "stale", source_age=5.0), _view("c", "fresh")]
    decision = decide(instance, results, None, POLICY, now=1000.0)
    assert decision.request is None and decision.episode is None
    assert "b source-stale (the offline data are old): a refresh cannot help" in decision.action
    assert "a in the warning band: notified, not refreshed" in decision.action
    fresh = decide(instance, [_view("c", "fresh")], None, POLICY, now=1000.0)
    assert fresh.action == "no stale view: c fresh" and fresh.request is None


def test_attempts_back_off_double_and_escalate(instance):
    results = [_view("a", "stale"), _view("b", "stale", source_age=5.0)]
    first = decide(instance, results, None, POLICY, now=0.0)
    assert first.request.run_config["ops"]["online_features"]["config"]["mode"] == "incremental"
    assert first.request.tags["e2i/stale_views"] == "a"  # b is source-stale: not refreshed
    assert "b source-stale" in first.action
    episode = first.episode
    waiting = decide(instance, results, episode, POLICY, now=599.0)
    assert waiting.request is None
    assert "attempt 2 of 2 at 1970-01-01T00:10:00+00:00" in waiting.action
    assert "attempt 1's run was never launched" in waiting.action
    second = decide(instance, results, episode, POLICY, now=600.0)
    assert second.request.run_config["ops"]["online_features"]["config"]["mode"] == "full"
    assert second.request.run_key != first.request.run_key
    # After two attempts (the policy's limit), escalated: no request however long it waits.
    escalated = decide(instance, results, second.episode, POLICY, now=10**6)
    assert escalated.request is None and escalated.escalated
    assert escalated.action.startswith("escalated: 2 refresh(es) did not heal a")
    assert escalated.metadata()["escalated"].value is True

    # A new stale state (another view, another kind) starts a new count.
    changed = [_view("a", "unknown", reason="online store: ConnectionError: refused")]
    fresh_count = decide(instance, changed, escalated.episode, POLICY, now=10**6)
    assert fresh_count.request is not None and fresh_count.episode["attempts"] == 1
    assert not fresh_count.escalated


def test_runs_that_write_the_online_store_are_told_by_selection_or_plan(e2i_home, instance):
    defs = definitions(load_settings())
    refresh = instance.create_run_for_job(defs.resolve_job_def("feature_refresh"))
    assert refresh.asset_selection is None  # read from its execution plan
    assert writes_online_features(instance, refresh)
    main_job = defs.resolve_job_def("e2i_main")
    ingest = instance.create_run_for_job(
        main_job, asset_selection=frozenset({dg.AssetKey("raw_triggers")})
    )
    assert not writes_online_features(instance, ingest)
    serving = instance.create_run_for_job(
        main_job, asset_selection=frozenset({dg.AssetKey("online_features")})
    )
    assert writes_online_features(instance, serving)
