"""The Great Expectations gate: each expectation family fails on data built to break it,
critical failures are ERROR, warning-level ones WARN, and the evidence is in metadata."""

from datetime import UTC, datetime, timedelta

import dagster as dg
import pandas as pd
import pytest

from e2i_platform.contract.pandera_models import validate
from e2i_platform.quality.checks import expectations_gate
from e2i_platform.settings.models import TableQuality


@pytest.fixture(scope="module")
def journeys(generated):
    return validate("patient_journeys", generated.table("patient_journeys"))


def _rules(**overrides) -> TableQuality:
    base = {
        "row_count": {"min": 50, "max": 1_000_000},
        "null_fraction": {"journey_end_date": {"max": 0.9}},
        "enums": {"mostly": 0.98},
        "distributions": {
            "disease_severity": {
                "mean": {"min": 3.0, "max": 7.0},
                "quantiles": {0.5: {"min": 3.0, "max": 7.0}},
                "severity": "critical",
            }
        },
        "recency": {"max_source_age_days": 7},
    }
    base.update(overrides)
    return TableQuality.model_validate(base)


NOW = datetime.now(UTC).replace(tzinfo=None)


def _failed_ids(result) -> set[str]:
    return {row["id"] for row in result.metadata["failed_expectations"].data}


def test_valid_generated_table_meets_every_expectation(journeys):
    result = expectations_gate("patient_journeys", journeys, _rules(), NOW)
    assert result.passed is True
    assert result.metadata["expectations_evaluated"].value >= 14


def test_row_count_out_of_range_blocks(journeys):
    result = expectations_gate(
        "patient_journeys", journeys, _rules(row_count={"min": 10_000, "max": 20_000}), NOW
    )
    assert result.passed is False and result.severity == dg.AssetCheckSeverity.ERROR
    (row,) = result.metadata["failed_expectations"].data
    assert row["id"] == "row_count" and row["observed"] == len(journeys)
    assert row["threshold"] == "10000 <= rows <= 20000"
    assert result.metadata["failing_rows"].value == 0  # a row count has no failing rows


def test_null_fraction_above_threshold_fails_with_observed_fraction(journeys):
    df = journeys.copy()
    df["journey_end_date"] = pd.NaT
    result = expectations_gate("patient_journeys", df, _rules(), NOW)
    assert _failed_ids(result) == {"null_fraction:journey_end_date"}
    assert result.severity == dg.AssetCheckSeverity.WARN  # warning-level by default
    row = result.metadata["failed_expectations"].data[0]
    assert row["observed"] == {"unexpected_fraction": 1.0}
    assert row["unexpected_count"] == len(df)


def test_enum_share_below_mostly_blocks(journeys):
    df = journeys.copy()
    df.loc[df.index[:30], "brand"] = "unknown_brand"  # 10% of 300 rows, above the 2% allowed
    result = expectations_gate("patient_journeys", df, _rules(), NOW)
    assert _failed_ids(result) == {"enum:brand"}
    assert result.severity == dg.AssetCheckSeverity.ERROR
    assert result.metadata["failed_expectations"].data[0]["sample"][0] == "unknown_brand"


def test_enum_share_within_mostly_passes(journeys):
    df = journeys.copy()
    df.loc[df.index[:3], "brand"] = "unknown_brand"  # 1%: tolerated by mostly=0.98
    assert expectations_gate("patient_journeys", df, _rules(), NOW).passed is True


def test_duplicate_natural_key_blocks(journeys):
    df = journeys.copy()
    for col in ("patient_id", "brand", "journey_start_date"):
        df.at[df.index[1], col] = df.at[df.index[0], col]
    result = expectations_gate("patient_journeys", df, _rules(), NOW)
    assert _failed_ids(result) == {"compound_unique:patient_id+brand+journey_start_date"}
    assert (
        result.metadata["failure_counts"].data[
            "compound_unique:patient_id+brand+journey_start_date"
        ]
        == 2
    )


def test_distribution_shift_fails_mean_and_quantile(journeys):
    df = journeys.copy()
    df["disease_severity"] = 9.5
    result = expectations_gate("patient_journeys", df, _rules(), NOW)
    assert _failed_ids(result) == {"mean:disease_severity", "quantiles:disease_severity"}
    observed = {r["id"]: r["observed"] for r in result.metadata["failed_expectations"].data}
    assert observed["mean:disease_severity"] == pytest.approx(9.5)


def test_stale_source_fails_recency_naming_the_cutoff(journeys):
    later = NOW + timedelta(days=30)
    result = expectations_gate("patient_journeys", journeys, _rules(), later)
    assert _failed_ids(result) == {"recency:source_timestamp"}
    assert result.severity == dg.AssetCheckSeverity.ERROR
    row = result.metadata["failed_expectations"].data[0]
    assert "7 days" in row["threshold"]


def test_warning_level_failure_is_warn_and_critical_wins_when_both_fail(journeys):
    warn_rules = _rules(row_count={"min": 10_000, "max": 20_000, "severity": "warning"})
    warned = expectations_gate("patient_journeys", journeys, warn_rules, NOW)
    assert warned.passed is False and warned.severity == dg.AssetCheckSeverity.WARN
    df = journeys.copy()
    df["disease_severity"] = 9.5  # critical distribution failure on top
    both = expectations_gate("patient_journeys", df, warn_rules, NOW)
    assert both.severity == dg.AssetCheckSeverity.ERROR
    assert "(2 critical, 1 warning)" in both.description  # mean and quantiles, row count
    assert _failed_ids(both) == {"row_count", "mean:disease_severity", "quantiles:disease_severity"}


def _outcomes(df, specs):
    from e2i_platform.quality.expectations import run_suite

    return {o.spec.id: o for o in run_suite("patient_journeys", df, specs)}


def test_a_suite_reports_every_expectation_and_one_that_cannot_run_fails(journeys):
    from e2i_platform.quality.expectations import ExpectationSpec

    def spec(id_, type_, **kwargs):
        return ExpectationSpec(id_, type_, kwargs, "critical", "")

    specs = [
        spec("row_count", "ExpectTableRowCountToBeBetween", min_value=1),
        spec("mean", "ExpectColumnMeanToBeBetween", column="engagement_score", min_value=50),
        spec("enum", "ExpectColumnValuesToBeInSet", column="brand", value_set=["Kisqali"]),
        # A column no frame has: GE cannot evaluate it, which is a failure.
        spec("nowhere", "ExpectColumnValuesToNotBeNull", column="nowhere"),
    ]
    outcomes = _outcomes(journeys, specs)
    assert set(outcomes) == {"row_count", "mean", "enum", "nowhere"}
    assert outcomes["row_count"].success is True
    assert outcomes["row_count"].observed == len(journeys)
    mean = outcomes["mean"]
    assert mean.success is False
    assert mean.observed == pytest.approx(journeys["engagement_score"].mean())
    enum = outcomes["enum"]
    others = int((journeys["brand"] != "Kisqali").sum())
    assert enum.success is False and enum.unexpected_count == others
    assert enum.observed == {"unexpected_fraction": round(others / len(journeys), 6)}
    assert enum.sample and "Kisqali" not in enum.sample
    nowhere = outcomes["nowhere"]
    assert nowhere.success is False and nowhere.unexpected_count is None and nowhere.sample == []


def test_the_summary_and_evidence_of_a_pass_and_of_a_failure(journeys):
    from e2i_platform.lib.verdicts import EXPIRES_AT

    passed = expectations_gate("patient_journeys", journeys, _rules(), NOW)
    n = passed.metadata["expectations_evaluated"].value
    assert (
        passed.description == f"patient_journeys: all {n} expectations met on {len(journeys)} rows"
    )
    assert passed.metadata["evaluated_at"].value == NOW.isoformat(timespec="seconds")
    assert passed.metadata["severity_applied"].value == "none"
    assert passed.metadata["failing_rows"].value == 0
    newest = journeys["source_timestamp"].max() + timedelta(days=7)
    assert passed.metadata[EXPIRES_AT].value == newest.replace(tzinfo=UTC).timestamp()

    df = journeys.copy()
    df.loc[df.index[:30], "brand"] = "unknown_brand"
    rules = _rules(row_count={"min": 10_000, "max": 20_000})
    failed = expectations_gate("patient_journeys", df, rules, NOW)
    head, _, ids = failed.description.rpartition(": ")
    assert head == f"patient_journeys: 2 of {n} expectations failed (2 critical, 0 warning)"
    assert sorted(ids.split(", ")) == ["enum:brand", "row_count"]
    # A row count has no failing rows; the most failing rows of any expectation count.
    assert failed.metadata["failure_counts"].data == {"enum:brand": 30, "row_count": 1}
    assert failed.metadata["failing_rows"].value == 30
    assert {r["id"] for r in failed.metadata["failure_sample"].data} == {"row_count", "enum:brand"}


def test_the_expectations_check_applies_the_configuration_in_force(settings, journeys):
    from e2i_platform.quality.checks import expectations_check
    from e2i_platform.quality.expectations import suite_specs
    from e2i_platform.resources import ConfigResource

    check = expectations_check("patient_journeys")
    body = check.node_def.compute_fn.decorated_fn.__wrapped__  # the check as written
    config = ConfigResource(config_dir=str(settings.config_dir), env=settings.env)
    before = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    result = body(journeys, config)
    rules = settings.quality.tables["patient_journeys"]
    assert result.passed is True, result.description
    expected = len(suite_specs("patient_journeys", rules, NOW))
    assert result.metadata["expectations_evaluated"].value == expected
    evaluated = datetime.fromisoformat(result.metadata["evaluated_at"].value)
    assert before <= evaluated <= datetime.now(UTC).replace(tzinfo=None)
