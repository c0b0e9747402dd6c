"""The Great Expectations suites: which expectations a table gets from the contract and
config/quality.yaml (ids, kwargs, severities, thresholds), the frame GE is given, and
how observed values are rendered (test_expectations_gate.py runs the suites)."""

from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from e2i_platform.quality.expectations import (
    ExpectationOutcome,
    ExpectationSpec,
    _columns_for_suite,
    _plain,
    suite_specs,
)
from e2i_platform.settings.models import TableQuality

NOW = datetime(2024, 6, 30, 12, 0, 0)


def _rules(**overrides) -> TableQuality:
    return TableQuality.model_validate(
        {"row_count": {"min": 5, "max": 500}, "recency": {"max_source_age_days": 7}, **overrides}
    )


def test_a_table_gets_one_expectation_per_rule_in_a_stable_order():
    rules = _rules(
        row_count={"min": 5, "max": 500, "severity": "warning"},
        null_fraction={"journey_end_date": {"max": 0.3}},
        enums={"mostly": 0.95, "severity": "warning"},
        compound_unique={"severity": "warning"},
        distributions={
            "disease_severity": {
                "mean": {"min": 3.0, "max": 7.0},
                "quantiles": {0.9: {"min": 5.0, "max": 9.5}, 0.1: {"min": 0.5, "max": 5.0}},
                "severity": "critical",
            },
            "engagement_score": {"mean": {"min": 3.0, "max": 8.0}},
        },
        recency={"max_source_age_days": 2.5, "severity": "warning"},
    )
    specs = suite_specs("patient_journeys", rules, NOW)
    enums = [
        "brand",
        "journey_stage",
        "journey_status",
        "geographic_region",
        "age_group",
        "gender",
        "insurance_type",
        "data_split",
    ]
    assert [s.id for s in specs] == [
        "row_count",
        "null_fraction:journey_end_date",
        *(f"enum:{c}" for c in enums),
        "compound_unique:patient_id+brand+journey_start_date",
        "mean:disease_severity",
        "quantiles:disease_severity",
        "mean:engagement_score",
        "recency:source_timestamp",
    ]
    by_id = {s.id: s for s in specs}

    row_count = by_id["row_count"]
    assert row_count.type == "ExpectTableRowCountToBeBetween"
    assert row_count.kwargs == {"min_value": 5, "max_value": 500}
    assert (row_count.severity, row_count.threshold) == ("warning", "5 <= rows <= 500")

    nulls = by_id["null_fraction:journey_end_date"]
    assert nulls.type == "ExpectColumnValuesToNotBeNull"
    assert nulls.kwargs == {"column": "journey_end_date", "mostly": 0.7}  # 1 - 0.3, exactly
    assert (nulls.severity, nulls.threshold) == ("warning", "null fraction <= 0.3")

    brand = by_id["enum:brand"]
    assert brand.type == "ExpectColumnValuesToBeInSet"
    assert brand.kwargs["column"] == "brand" and brand.kwargs["mostly"] == 0.95
    assert "Kisqali" in brand.kwargs["value_set"] and isinstance(brand.kwargs["value_set"], list)
    assert brand.severity == "warning" and brand.threshold.endswith(" >= 0.95")

    unique = by_id["compound_unique:patient_id+brand+journey_start_date"]
    assert unique.type == "ExpectCompoundColumnsToBeUnique"
    assert unique.kwargs == {"column_list": ["patient_id", "brand", "journey_start_date"]}
    assert unique.severity == "warning"
    assert unique.threshold == "(patient_id, brand, journey_start_date) unique"

    mean = by_id["mean:disease_severity"]
    assert mean.type == "ExpectColumnMeanToBeBetween"
    assert mean.kwargs == {"column": "disease_severity", "min_value": 3.0, "max_value": 7.0}
    assert (mean.severity, mean.threshold) == ("critical", "3.0 <= mean <= 7.0")
    assert by_id["mean:engagement_score"].severity == "warning"  # the default

    quantiles = by_id["quantiles:disease_severity"]
    assert quantiles.type == "ExpectColumnQuantileValuesToBeBetween"
    assert quantiles.kwargs == {
        "column": "disease_severity",
        "quantile_ranges": {"quantiles": [0.1, 0.9], "value_ranges": [[0.5, 5.0], [5.0, 9.5]]},
    }
    assert quantiles.threshold == "q0.1 in [0.5, 5.0], q0.9 in [5.0, 9.5]"
    assert quantiles.severity == "critical"

    recency = by_id["recency:source_timestamp"]
    assert recency.type == "ExpectColumnMaxToBeBetween"
    oldest = NOW - timedelta(days=2.5)
    assert recency.kwargs == {"column": "source_timestamp", "min_value": oldest}
    assert recency.severity == "warning"
    assert recency.threshold == "newest source_timestamp >= 2024-06-28T00:00:00 (2.5 days)"


def test_defaults_a_table_without_natural_key_and_a_quantile_only_distribution():
    rules = _rules(distributions={"years_experience": {"quantiles": {0.5: {"min": 5, "max": 35}}}})
    specs = suite_specs("hcp_profiles", rules, NOW)
    ids = [s.id for s in specs]
    assert not any(i.startswith(("compound_unique", "mean:", "null_fraction")) for i in ids)
    assert ids[-2:] == ["quantiles:years_experience", "recency:updated_at"]
    by_id = {s.id: s for s in specs}
    assert by_id["row_count"].severity == "critical"
    assert by_id["enum:specialty"].severity == "critical"
    assert by_id["enum:specialty"].kwargs["mostly"] == 1.0
    assert by_id["recency:updated_at"].severity == "critical"
    assert by_id["recency:updated_at"].threshold.endswith("(7 days)")


def test_plain_renders_observed_values_as_json():
    assert _plain(pd.Timestamp("2024-01-02 03:04:05")) == "2024-01-02T03:04:05"
    assert _plain(np.int64(7)) == 7 and type(_plain(np.int64(7))) is int
    assert _plain(np.float64(0.5)) == 0.5 and type(_plain(np.float64(0.5))) is float
    assert _plain(1 / 3) == 0.333333
    assert _plain((np.int64(1), [2.0000004, "x"])) == [1, [2.0, "x"]]
    assert _plain({1: np.bool_(True), "k": None}) == {"1": True, "k": None}
    assert _plain("text") == "text" and _plain(None) is None


def test_an_outcome_row_shows_the_rule_and_at_most_five_cases():
    spec = ExpectationSpec("enum:brand", "ExpectColumnValuesToBeInSet", {}, "critical", "share")
    outcome = ExpectationOutcome(spec, False, {"unexpected_fraction": 0.5}, 7, list("abcdefg"))
    assert outcome.as_row() == {
        "id": "enum:brand",
        "severity": "critical",
        "observed": {"unexpected_fraction": 0.5},
        "threshold": "share",
        "unexpected_count": 7,
        "sample": ["a", "b", "c", "d", "e"],
    }


def test_ge_sees_only_the_columns_the_suite_reads_with_enums_as_categories(generated):
    df = generated.table("treatment_events")
    specs = [
        ExpectationSpec("a", "T", {"column": "brand"}, "critical", ""),
        ExpectationSpec("b", "T", {"column": "cost"}, "critical", ""),
        ExpectationSpec(
            "c", "T", {"column_list": ["patient_journey_id", "sequence_number"]}, "", ""
        ),
        ExpectationSpec("d", "T", {"min_value": 1}, "critical", ""),
    ]
    frame = _columns_for_suite("treatment_events", df, specs)
    # In the contract's column order, not the suite's.
    assert list(frame.columns) == ["patient_journey_id", "brand", "cost", "sequence_number"]
    assert frame["brand"].dtype == "category"
    assert frame["cost"].dtype == df["cost"].dtype
    assert frame["patient_journey_id"].dtype == df["patient_journey_id"].dtype
    assert (frame["brand"].astype(str) == df["brand"]).all()
