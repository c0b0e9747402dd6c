"""`gate_result`: the one shape of every gate's evidence -- severity from what failed,
the metadata keys and value types, ordered counts and a bounded sample."""

from datetime import datetime

import dagster as dg

from e2i_platform.lib.gate_results import SAMPLE_LIMIT, gate_result


def _result(**kwargs) -> dg.AssetCheckResult:
    base = {"passed": True, "blocking_failure": True, "summary": "s", "rows_checked": 10}
    return gate_result(**{**base, **kwargs})


def test_a_pass_is_severity_error_but_applies_none():
    result = _result(summary="all 10 rows fine")
    assert result.passed is True
    assert result.severity == dg.AssetCheckSeverity.ERROR  # what a failure would have been
    assert result.metadata["severity_applied"].value == "none"
    assert result.description == "all 10 rows fine"
    assert result.metadata["summary"].value == "all 10 rows fine"
    assert result.metadata["rows_checked"].value == 10
    assert result.metadata["failing_rows"].value == 0
    assert "failure_counts" not in result.metadata and "failure_sample" not in result.metadata


def test_a_blocking_failure_is_error_and_a_non_blocking_one_warn():
    blocking = _result(passed=False, blocking_failure=True, failing_rows=3)
    assert blocking.passed is False
    assert blocking.severity == dg.AssetCheckSeverity.ERROR
    assert blocking.metadata["severity_applied"].value == "ERROR"
    assert blocking.metadata["failing_rows"].value == 3
    warned = _result(passed=False, blocking_failure=False)
    assert warned.passed is False
    assert warned.severity == dg.AssetCheckSeverity.WARN
    assert warned.metadata["severity_applied"].value == "WARN"


def test_failure_counts_are_ordered_most_frequent_first_ties_in_given_order():
    result = _result(passed=False, failure_counts={"a: rare": 1, "b: tie": 3, "c: top": 9, "d": 3})
    counts = result.metadata["failure_counts"]
    assert isinstance(counts, dg.JsonMetadataValue)
    assert list(counts.data.items()) == [("c: top", 9), ("b: tie", 3), ("d", 3), ("a: rare", 1)]
    assert "failure_counts" not in _result(passed=False, failure_counts={}).metadata


def test_the_sample_keeps_exactly_the_first_twenty_cases_as_json():
    assert SAMPLE_LIMIT == 20
    cases = [{"row": i, "seen": datetime(2024, 1, 1, 0, 0, i)} for i in range(SAMPLE_LIMIT + 5)]
    sample = _result(passed=False, sample=cases).metadata["failure_sample"].data
    assert [c["row"] for c in sample] == list(range(SAMPLE_LIMIT))
    assert sample[0]["seen"] == "2024-01-01 00:00:00"  # not JSON itself: as text
    exactly = _result(passed=False, sample=cases[:SAMPLE_LIMIT]).metadata["failure_sample"]
    assert len(exactly.data) == SAMPLE_LIMIT
    assert "failure_sample" not in _result(passed=False, sample=[]).metadata


def test_extra_values_keep_their_type():
    custom = dg.MetadataValue.path("/tmp/x.parquet")
    extra = {
        "flag": True,
        "count": 7,
        "ratio": 0.25,
        "name": "text",
        "columns": ["a", "b"],
        "when": datetime(2024, 5, 6),
        "custom": custom,
    }
    metadata = _result(extra=extra).metadata
    assert isinstance(metadata["flag"], dg.BoolMetadataValue) and metadata["flag"].value is True
    assert isinstance(metadata["count"], dg.IntMetadataValue) and metadata["count"].value == 7
    assert isinstance(metadata["ratio"], dg.FloatMetadataValue) and metadata["ratio"].value == 0.25
    assert isinstance(metadata["name"], dg.TextMetadataValue) and metadata["name"].value == "text"
    assert isinstance(metadata["columns"], dg.JsonMetadataValue)
    assert metadata["columns"].data == ["a", "b"]
    assert metadata["when"].data == "2024-05-06 00:00:00"
    assert metadata["custom"] is custom
