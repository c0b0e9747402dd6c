"""The Pandera gate: one failing case per rule family, with the evidence it reports."""

import dagster as dg
import pandas as pd
import pytest

from e2i_platform.lib.schema_gate import schema_gate


def _set(table, column, value, rows=(0,)):
    def mutate(df):
        df = df.copy()
        if column in df and df[column].dtype != object and isinstance(value, str):
            df[column] = df[column].astype(object)
        for r in rows:
            df.at[r, column] = value
        return df

    return table, mutate


def _copy_row(table, column):
    def mutate(df):
        df = df.copy()
        df.at[1, column] = df.at[0, column]
        return df

    return table, mutate


def _copy_column(table, source, target):
    def mutate(df):
        df = df.copy()
        df.at[0, target] = df.at[0, source]
        return df

    return table, mutate


def _shift(table, column, other, delta):
    def mutate(df):
        df = df.copy()
        df.at[0, column] = df.at[0, other] + delta
        return df

    return table, mutate


RULE_FAMILIES = {
    "dtype": (
        _set("hcp_profiles", "years_experience", "twelve"),
        "years_experience",
        "coerce_dtype('int64')",
    ),
    "dtype_bool": (
        _set("treatment_events", "adverse_event_flag", "maybe"),
        "adverse_event_flag",
        "dtype('bool')",
    ),
    "required": (_set("patient_journeys", "brand", None), "brand", "not_nullable"),
    "range": (_set("hcp_profiles", "decile", 11), "decile", "less_than_or_equal_to(10)"),
    "range_score": (
        _set("patient_journeys", "data_quality_score", 1.5),
        "data_quality_score",
        "less_than_or_equal_to(1.0)",
    ),
    "enum": (_set("patient_journeys", "journey_stage", "remission"), "journey_stage", "isin"),
    "unique": (_copy_row("triggers", "trigger_id"), "trigger_id", "field_uniqueness"),
    "id_format": (_set("patient_journeys", "patient_id", "PAT123"), "patient_id", "str_matches"),
    "npi_luhn": (_set("hcp_profiles", "npi", "1234567890"), "npi", "luhn(80840)"),
    "end_before_start": (
        _shift("patient_journeys", "journey_end_date", "journey_start_date", pd.Timedelta(days=-1)),
        "journey_start_date,journey_end_date",
        "journey_end_date >= journey_start_date",
    ),
    "ingested_before_source": (
        _shift(
            "patient_journeys", "ingestion_timestamp", "source_timestamp", pd.Timedelta(minutes=-5)
        ),
        "source_timestamp,ingestion_timestamp",
        "ingestion_timestamp >= source_timestamp",
    ),
    "achievement_rate": (
        _set("business_metrics", "achievement_rate", 7.0),
        "achievement_rate,value,target",
        "achievement_rate = value / target",
    ),
    "start_equals_end": (
        _copy_column("causal_paths", "start_node", "end_node"),
        "start_node,end_node",
        "start_node != end_node",
    ),
}


@pytest.mark.parametrize("family", sorted(RULE_FAMILIES))
def test_each_rule_family_fails_the_gate_with_evidence(generated, family):
    (table, mutate), column, check = RULE_FAMILIES[family]
    df = mutate(generated.table(table))
    result = schema_gate(table, df, f"raw_{table}")
    assert result.passed is False
    assert result.severity == dg.AssetCheckSeverity.ERROR
    counts = result.metadata["failure_counts"].data
    matching = [k for k in counts if k.startswith(f"{column}: ") and check in k]
    assert matching, f"expected a failure for {column!r} / {check!r}, got {counts}"
    assert result.metadata["failing_rows"].value >= 1
    sample = result.metadata["failure_sample"].data
    assert 1 <= len(sample) <= 20
    assert any(s["row"] in (0, 1) for s in sample)


def test_valid_table_passes(generated):
    result = schema_gate("patient_journeys", generated.table("patient_journeys"), "raw")
    assert result.passed is True
    assert result.metadata["failing_rows"].value == 0


def test_missing_and_extra_columns_are_named(generated):
    df = generated.table("triggers").drop(columns=["priority"]).assign(colour="red")
    result = schema_gate("triggers", df, "raw_triggers")
    assert result.passed is False
    assert result.metadata["missing_columns"].data == ["priority"]
    assert result.metadata["extra_columns"].data == ["colour"]
    assert "missing columns ['priority']" in result.description


def test_failure_sample_is_bounded_and_counts_every_failing_row(generated):
    df = generated.table("hcp_profiles").copy()
    df["decile"] = 99  # every row out of range
    result = schema_gate("hcp_profiles", df, "raw_hcp_profiles")
    assert result.metadata["failing_rows"].value == len(df)
    assert len(result.metadata["failure_sample"].data) == 20
    assert result.metadata["failure_counts"].data["decile: less_than_or_equal_to(10)"] == len(df)
