"""The validated tables' gates as definitions (blocking, what they read, what they say)
and the referential gate's edges: a child time equal to its parent's is fine, samples
are bounded, the summary names each broken reference. A critical recency verdict
expires when the newest event gets too old."""

from datetime import UTC, datetime, timedelta

import dagster as dg
import pandas as pd
import pytest

from e2i_platform.contract import INPUT_TABLES
from e2i_platform.contract.pandera_models import validate
from e2i_platform.lib.verdicts import EXPIRES_AT
from e2i_platform.quality.checks import (
    _recency_expiry,
    expectations_check,
    quality_checks,
    references_check,
    references_gate,
)
from e2i_platform.settings.models import TableQuality


def _spec(checks: dg.AssetChecksDefinition) -> dg.AssetCheckSpec:
    (spec,) = checks.check_specs
    return spec


def test_every_table_has_a_blocking_expectations_gate_and_references_where_it_has_keys():
    keys = {(s.asset_key.path[-1], s.name) for c in quality_checks() for s in c.check_specs}
    assert keys == {(t, "expectations") for t in INPUT_TABLES} | {
        ("patient_journeys", "references_resolve"),
        ("treatment_events", "references_resolve"),
    }
    assert all(s.blocking for c in quality_checks() for s in c.check_specs)


def test_the_expectations_gate_definition():
    spec = _spec(expectations_check("triggers"))
    assert spec.key == dg.AssetCheckKey(dg.AssetKey("triggers"), "expectations")
    assert spec.blocking is True
    assert spec.description.startswith("Great Expectations suite of `triggers` from the contract")
    assert "A failed critical expectation is ERROR (blocks)" in spec.description


def test_the_references_gate_reads_the_parent_and_says_what_it_requires():
    events = references_check("treatment_events")
    spec = _spec(events)
    assert spec.key == dg.AssetCheckKey(dg.AssetKey("treatment_events"), "references_resolve")
    assert spec.blocking is True
    assert dg.AssetKey("patient_journeys") in {d.asset_key for d in spec.additional_deps}
    assert spec.description == (
        "Every `treatment_events.patient_journey_id` exists in "
        "`patient_journeys.patient_journey_id`, and `event_date` is not before the "
        "patient_journeys `journey_start_date`. Reports orphan counts and samples; "
        "ERROR blocks downstream."
    )
    journeys = _spec(references_check("patient_journeys"))
    assert journeys.description == (
        "Every `patient_journeys.hcp_id` exists in `hcp_profiles.hcp_id`. Reports orphan "
        "counts and samples; ERROR blocks downstream."
    )


@pytest.fixture(scope="module")
def typed(generated):
    return {
        t: validate(t, generated.table(t))
        for t in ("hcp_profiles", "patient_journeys", "treatment_events")
    }


def test_resolved_references_say_so(typed):
    result = references_gate(
        "treatment_events", typed["treatment_events"], typed["patient_journeys"]
    )
    n = len(typed["treatment_events"])
    assert result.passed is True
    assert result.description == f"treatment_events: all {n} rows resolve to patient_journeys"
    assert result.metadata["rows_checked"].value == n
    assert result.metadata["failing_rows"].value == 0
    assert "failure_counts" not in result.metadata


def test_an_event_on_its_journeys_first_day_is_not_early(typed):
    events = typed["treatment_events"].copy()
    starts = typed["patient_journeys"].set_index("patient_journey_id")["journey_start_date"]
    events["event_date"] = events["patient_journey_id"].map(starts)  # equal: allowed
    assert references_gate("treatment_events", events, typed["patient_journeys"]).passed
    events.loc[events.index[3], "event_date"] -= pd.Timedelta(seconds=1)
    result = references_gate("treatment_events", events, typed["patient_journeys"])
    assert result.passed is False
    assert result.metadata["failure_counts"].data == {
        "event_date < patient_journeys.journey_start_date": 1
    }
    (case,) = result.metadata["failure_sample"].data
    assert case["row"] == events.index[3] and case["event_date"] < case["journey_start_date"]


def test_many_broken_references_are_counted_and_sampled_within_the_limit(typed):
    events = typed["treatment_events"].copy()
    early = events.index[:25]
    events.loc[early, "event_date"] = pd.Timestamp("1990-01-01")
    orphans = events.index[30:60]
    events.loc[orphans, "patient_journey_id"] = "PJ0000000000000000"
    result = references_gate("treatment_events", events, typed["patient_journeys"])
    n = len(events)
    assert result.metadata["failing_rows"].value == 55
    assert result.metadata["severity_applied"].value == "ERROR"
    assert result.description == (
        f"treatment_events: 55 of {n} rows break references to patient_journeys: "
        "patient_journey_id not in patient_journeys.patient_journey_id (30); "
        "event_date < patient_journeys.journey_start_date (25)"
    )
    sample = result.metadata["failure_sample"].data
    assert len(sample) == 20  # orphans first (20), then early ones: none left to show
    assert {s["problem"] for s in sample} == {"no such patient_journeys.patient_journey_id"}
    # An orphan has no parent time: it is not also counted as early.
    only_orphans = typed["treatment_events"].copy()
    only_orphans.loc[orphans, "patient_journey_id"] = "PJ0000000000000000"
    only_orphans.loc[orphans, "event_date"] = pd.Timestamp("1990-01-01")
    result = references_gate("treatment_events", only_orphans, typed["patient_journeys"])
    assert result.metadata["failure_counts"].data == {
        "patient_journey_id not in patient_journeys.patient_journey_id": 30
    }


def test_a_table_without_time_ordering_checks_only_its_keys(typed):
    journeys = typed["patient_journeys"].copy()
    journeys.loc[journeys.index[:2], "hcp_id"] = "HCP00000000"
    result = references_gate("patient_journeys", journeys, typed["hcp_profiles"])
    assert result.metadata["failure_counts"].data == {"hcp_id not in hcp_profiles.hcp_id": 2}
    assert [s["row"] for s in result.metadata["failure_sample"].data] == [0, 1]


def _recency(days: float, severity: str = "critical") -> TableQuality:
    return TableQuality.model_validate(
        {
            "row_count": {"min": 1, "max": 10},
            "recency": {"max_source_age_days": days, "severity": severity},
        }
    )


def test_a_critical_recency_verdict_expires_when_the_newest_event_is_too_old():
    newest = datetime(2024, 3, 1, 12, 0, 0)
    df = pd.DataFrame({"trigger_timestamp": [newest - timedelta(days=3), newest]})
    found = _recency_expiry("triggers", df, _recency(2.5))
    until = (newest + timedelta(days=2.5)).replace(tzinfo=UTC).timestamp()
    assert found[EXPIRES_AT] == dg.MetadataValue.timestamp(until)
    assert _recency_expiry("triggers", df, _recency(2.5, "warning")) == {}
    assert _recency_expiry("triggers", df.iloc[:0], _recency(2.5)) == {}
    no_times = pd.DataFrame({"trigger_timestamp": pd.Series([pd.NaT], dtype="datetime64[ns]")})
    assert _recency_expiry("triggers", no_times, _recency(2.5)) == {}
