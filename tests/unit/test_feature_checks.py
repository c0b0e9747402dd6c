"""The `freshness` gate on online_features: a blocking check whose severity follows the
worst view (WARN in the warning band, ERROR when stale or unknown), with every view's
clocks and the moment the verdict expires as evidence."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
import pandas as pd
import pytest

from e2i_platform.features.checks import evaluate_freshness, freshness_check, freshness_gate
from e2i_platform.features.freshness import ViewFreshness
from e2i_platform.features.specs import EVENT_TIMESTAMP, VIEWS

NOW = datetime(2026, 12, 1, 8, 0, 30, tzinfo=UTC)


def _view(view: str, status: str, **kw) -> ViewFreshness:
    return ViewFreshness(
        **{
            "view": view,
            "status": status,
            "reason": f"{view} is {status}",
            "max_age_hours": 2.0,
            "warning_hours": 1.0,
            "coverage_age_hours": 0.5,
            "serving_max_age_hours": 0.75,
            "sampled": 10,
            "missing": 0,
            **kw,
        }
    )


def _meta(result: dg.AssetCheckResult, key: str):
    value = result.metadata[key]
    return getattr(value, "value", value)


def test_the_check_is_blocking_on_online_features_and_states_its_rule():
    assert isinstance(freshness_check, dg.AssetChecksDefinition)
    (spec,) = freshness_check.check_specs
    assert spec.key == dg.AssetCheckKey(dg.AssetKey("online_features"), "freshness")
    assert spec.blocking is True
    for words in (
        "registry coverage",
        "source freshness",
        "serving freshness",
        "ERROR when a view is stale or unknown",
        "WARN in the warning band",
        "config/feast_materialization.yaml",
    ):
        assert words in spec.description


def test_all_views_fresh_pass_with_their_clocks_and_expiry():
    results = [_view("a", "fresh", missing=0), _view("b", "fresh", sampled=7)]
    gate = freshness_gate(results, NOW)
    assert gate.passed is True
    assert _meta(gate, "severity_applied") == "none"
    assert gate.description == "all 2 feature views fresh"
    assert _meta(gate, "summary") == "all 2 feature views fresh"
    assert _meta(gate, "status") == "fresh"
    assert _meta(gate, "views") == {"a": results[0].as_dict(), "b": results[1].as_dict()}
    assert _meta(gate, "evaluated_at") == "2026-12-01T08:00:30+00:00"
    assert _meta(gate, "rows_checked") == 17 and _meta(gate, "failing_rows") == 0
    assert "failure_counts" not in gate.metadata
    # Both views turn stale 2 h - 0.75 h after NOW.
    until = (NOW + timedelta(hours=1.25)).timestamp()
    assert _meta(gate, "dagster/fresh_until_timestamp") == until


def test_a_view_in_the_warning_band_warns_without_blocking():
    results = [_view("a", "fresh"), _view("b", "warning", missing=2, serving_max_age_hours=1.5)]
    gate = freshness_gate(results, NOW)
    assert gate.passed is False
    assert gate.severity == dg.AssetCheckSeverity.WARN
    assert _meta(gate, "severity_applied") == "WARN"
    assert gate.description == "feature freshness warning: b warning (b is warning)"
    assert _meta(gate, "failure_counts") == {"b: warning": 1}
    assert _meta(gate, "failing_rows") == 2 and _meta(gate, "rows_checked") == 20
    assert _meta(gate, "dagster/fresh_until_timestamp") == (NOW + timedelta(minutes=30)).timestamp()


@pytest.mark.parametrize("worst", ["stale", "unknown"])
def test_a_stale_or_unknown_view_is_an_error(worst):
    results = [_view("a", "warning"), _view("b", "fresh"), _view("c", worst)]
    gate = freshness_gate(results, NOW)
    assert gate.passed is False
    assert gate.severity == dg.AssetCheckSeverity.ERROR
    assert _meta(gate, "status") == worst
    # c has no measured source age (the helper leaves it out): source-stale.
    assert gate.description == (
        f"feature freshness {worst}: a warning (a is warning); c {worst} [source] (c is {worst})"
    )
    assert _meta(gate, "failure_counts") == {"a: warning": 1, f"c: {worst}": 1}
    assert _meta(gate, "stale_kind") == "source"


@pytest.mark.parametrize(
    ("status", "reason", "source_age", "kind"),
    [
        ("fresh", "ok", 0.5, None),
        ("warning", "oldest clock 1.5 h", 0.5, None),
        ("stale", "oldest clock 3 h", 3.0, "source"),  # the offline data are old
        ("stale", "oldest clock 3 h", 0.5, "serving"),  # new offline data not served
        ("stale", "5 of 10 sampled entities missing online", 0.5, "serving"),
        ("unknown", "never materialized", 0.5, "serving"),
        ("unknown", "no sampled entity is in the online store", 0.5, "serving"),
        ("unknown", "online store: ConnectionError: refused", 0.5, "store"),
        ("unknown", "registry: OSError: unreadable", 0.5, "store"),
        ("unknown", "feature store: Failure: REDIS_URL is not set", 0.5, "store"),
        ("unknown", "online store: ConnectionError: refused", 2.5, "source"),
        ("unknown", "no offline data at x", None, "source"),
    ],
)
def test_what_a_stale_view_needs_is_told_by_its_kind(status, reason, source_age, kind):
    view = _view("v", status, reason=reason, source_age_hours=source_age)
    assert view.kind == kind
    assert view.as_dict()["kind"] == kind


def test_the_gate_names_every_kind_it_found():
    results = [
        _view("a", "stale", source_age_hours=3.0),
        _view("b", "unknown", reason="online store: ConnectionError", source_age_hours=0.2),
        _view("c", "fresh", source_age_hours=0.2),
    ]
    gate = freshness_gate(results, NOW)
    assert _meta(gate, "stale_kind") == "source,store"
    assert "a stale [source]" in gate.description and "b unknown [store]" in gate.description
    assert "stale_kind" not in freshness_gate([results[2]], NOW).metadata


def test_an_unknown_view_leaves_no_expiry():
    gate = freshness_gate([_view("a", "fresh"), _view("b", "unknown")], NOW)
    assert "dagster/fresh_until_timestamp" not in gate.metadata
    assert gate.severity == dg.AssetCheckSeverity.ERROR


def test_an_unreachable_store_makes_every_view_unknown_with_its_own_limits(settings):
    from e2i_platform.resources.feast import FeastResource

    feast = FeastResource(home=str(settings.home), project="p", online_store="redis")
    results = evaluate_freshness(feast, settings.feast, NOW)  # redis without REDIS_URL
    assert [r.view for r in results] == list(VIEWS)
    for r in results:
        assert r.status == "unknown"
        assert r.reason.startswith("feature store: Failure: "), r.reason
        assert "REDIS_URL is not set" in r.reason
        limits = settings.feast.limits(r.view)
        assert (r.max_age_hours, r.warning_hours) == (limits.max_age_hours, limits.warning_hours)
    by_view = {r.view: r for r in results}
    assert (
        by_view["market_features"].max_age_hours,
        by_view["patient_features"].max_age_hours,
    ) == (
        36,
        2,
    )
    gate = freshness_gate(results, NOW)
    assert gate.severity == dg.AssetCheckSeverity.ERROR and gate.passed is False


def test_every_view_is_measured_at_the_given_moment(settings):
    """A store with nothing applied: each view is unknown, but the source clock of a view
    with offline data is measured at `now` (the given moment, or the present)."""
    from e2i_platform.resources.feast import FeastResource

    feast = FeastResource.for_settings(settings)
    feast.offline_dir.mkdir(parents=True, exist_ok=True)
    newest = NOW - timedelta(hours=3)
    frame = pd.DataFrame({"patient_id": ["PAT00000001"], EVENT_TIMESTAMP: pd.Timestamp(newest)})
    frame.to_parquet(feast.offline_dir / "patient_features.parquet", index=False)

    results = {r.view: r for r in evaluate_freshness(feast, settings.feast, NOW)}
    assert list(results) == list(VIEWS)
    patient = results["patient_features"]
    assert patient.status == "unknown" and patient.reason.startswith("registry: ")
    assert patient.source_age_hours == 3.0
    assert (
        results["market_features"].max_age_hours
        == settings.feast.limits("market_features").max_age_hours
    )
    assert all(r.status == "unknown" for r in results.values())

    present = evaluate_freshness(feast, settings.feast)
    age = {r.view: r for r in present}["patient_features"].source_age_hours
    expected = (datetime.now(UTC) - newest) / timedelta(hours=1)
    assert abs(age - expected) < 0.1
