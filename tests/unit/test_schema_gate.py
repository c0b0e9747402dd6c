"""The Pandera gate: one failing case per rule family, with the evidence it reports."""

from datetime import timedelta

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from pandera.errors import SchemaErrors

from e2i_platform.contract import INPUT_TABLES, TABLES
from e2i_platform.contract.pandera_models import validate
from e2i_platform.ingest.sources import read_landing
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


# --- coercion never changes a value; finite numbers; no times in the future -------------

TOLERANCE = timedelta(minutes=5)
FUTURE = f"not_after_now+{TOLERANCE}"  # not_after_now+0:05:00


def _columns(dtype):
    return [
        pytest.param(t, c.name, id=f"{t}.{c.name}")
        for t in INPUT_TABLES
        for c in TABLES[t].columns
        if c.dtype == dtype
    ]


def _land(tmp_path, table, df, fmt):
    """Write `df` as a landing file and read it back exactly as the raw asset does."""
    path = tmp_path / f"{table}.{fmt}"
    if fmt == "parquet":
        df.to_parquet(path, index=False)
    else:
        df.to_csv(path, index=False)
    return read_landing(path, table)


def _named(result, column, check):
    """Assert a blocking failure of `column` / `check`, named in the summary too; return
    its count and the sampled cases {row: failure_case}."""
    assert result.passed is False
    assert result.severity == dg.AssetCheckSeverity.ERROR
    counts = result.metadata["failure_counts"].data
    keys = [k for k in counts if k.startswith(f"{column}: ") and check in k]
    assert keys, f"expected a failure for {column!r} / {check!r}, got {counts}"
    assert f"{keys[0]} ({counts[keys[0]]})" in result.description
    cases = {
        s["row"]: s["failure_case"]
        for s in result.metadata["failure_sample"].data
        if s["column"] == column and check in s["check"]
    }
    return counts[keys[0]], cases


def _counts(result) -> dict:
    return result.metadata["failure_counts"].data if "failure_counts" in result.metadata else {}


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
@pytest.mark.parametrize(("table", "column"), _columns("int"))
def test_a_fraction_in_an_int_column_fails_and_is_never_truncated(
    generated, tmp_path, table, column, fmt
):
    df = generated.table(table).copy()
    df[column] = df[column].astype("float64")  # as a float column lands in Parquet/CSV
    value = df.at[3, column] + 0.5
    df.at[3, column] = value
    raw = _land(tmp_path, table, df, fmt)
    result = schema_gate(table, raw, f"raw_{table}")
    count, cases = _named(result, column, "coerce_dtype('int64')")
    assert count == 1 and cases == {3: str(value)}
    assert result.metadata["failing_rows"].value == 1
    # The other, integral, values of the float column are accepted (12.0 is 12) ...
    assert len(result.metadata["failure_counts"].data) == 1, result.metadata["failure_counts"]
    # ... and the validated assets (the same `validate`) never see a truncated value.
    with pytest.raises(SchemaErrors) as exc:
        validate(table, raw)
    assert exc.value.failure_cases[["column", "index"]].values.tolist() == [[column, 3]]


def test_integer_text_of_a_csv_is_typed_exactly_and_a_fraction_named(generated, tmp_path):
    df = generated.table("treatment_events").copy()
    raw = _land(tmp_path, "treatment_events", df, "csv")
    assert raw["sequence_number"].dtype == object  # CSV arrives as text
    typed = validate("treatment_events", raw)
    assert typed["sequence_number"].dtype == "int64"
    assert (typed["sequence_number"].to_numpy() == df["sequence_number"].to_numpy()).all()
    raw.loc[[4, 7], "sequence_number"] = ["12.5", "twelve"]
    result = schema_gate("treatment_events", raw, "raw_treatment_events")
    count, cases = _named(result, "sequence_number", "coerce_dtype('int64')")
    assert count == 2 and cases == {4: "12.5", 7: "twelve"}


@pytest.mark.parametrize("case", ["beyond_int64", "inf", "boolean"])
def test_other_values_an_int_column_cannot_hold_are_named(generated, case):
    df = generated.table("hcp_profiles").copy()
    if case == "boolean":  # a flag is not a number (True would silently become 1)
        df["years_experience"] = df["years_experience"] > 10
    else:  # 1e20 would wrap to -2**63; inf has no integer
        df["years_experience"] = df["years_experience"].astype("float64")
        df.at[0, "years_experience"] = 1e20 if case == "beyond_int64" else np.inf
    result = schema_gate("hcp_profiles", df, "raw_hcp_profiles")
    count, cases = _named(result, "years_experience", "coerce_dtype('int64')")
    assert 0 in cases
    assert count == (len(df) if case == "boolean" else 1)


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
@pytest.mark.parametrize(("table", "column"), _columns("float"))
def test_non_numeric_text_in_a_float_column_fails(generated, tmp_path, table, column, fmt):
    df = generated.table(table).copy()
    df[column] = df[column].map(repr).astype(object)  # a text column (Parquet string, CSV)
    df.at[3, column] = "1,5"
    raw = _land(tmp_path, table, df, fmt)
    result = schema_gate(table, raw, f"raw_{table}")
    count, cases = _named(result, column, "coerce_dtype('float64')")
    assert count == 1 and cases == {3: "1,5"}
    assert result.metadata["failing_rows"].value == 1


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
@pytest.mark.parametrize(("table", "column"), _columns("datetime"))
def test_an_unparsable_date_fails_naming_the_row(generated, tmp_path, table, column, fmt):
    df = generated.table(table).copy()
    df[column] = df[column].astype(str).astype(object)  # NaT becomes the text "NaT": a null
    df.at[2, column] = "2024-13-45"
    raw = _land(tmp_path, table, df, fmt)
    result = schema_gate(table, raw, f"raw_{table}")
    count, cases = _named(result, column, "coerce_dtype('datetime64[ns]')")
    assert count == 1 and cases == {2: "2024-13-45"}
    # Consequences of the placeholder (null, type errors of row rules) are not reported.
    assert result.metadata["failing_rows"].value == 1
    assert list(result.metadata["failure_counts"].data) == [
        f"{column}: coerce_dtype('datetime64[ns]')"
    ]


def test_iso_text_with_offsets_and_mixed_precision_is_typed_to_naive_utc(generated):
    df = generated.table("triggers").copy()
    df["trigger_timestamp"] = df["trigger_timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S")
    df.loc[0, "trigger_timestamp"] = "2024-01-02T10:00:00.123Z"
    df.loc[1, "trigger_timestamp"] = "2024-01-02T12:00:00+02:00"
    typed = validate("triggers", df)
    assert typed.loc[0, "trigger_timestamp"] == pd.Timestamp("2024-01-02 10:00:00.123")
    assert typed.loc[1, "trigger_timestamp"] == pd.Timestamp("2024-01-02 10:00:00")
    assert typed["trigger_timestamp"].dtype == "datetime64[ns]"


def test_numbers_are_not_datetimes_and_out_of_range_datetimes_are_named(generated):
    df = generated.table("causal_paths").copy()
    df["discovery_date"] = df["discovery_date"].astype("int64")  # epoch, unit unknown
    result = schema_gate("causal_paths", df, "raw_causal_paths")
    count, _ = _named(result, "discovery_date", "coerce_dtype('datetime64[ns]')")
    assert count == len(df)
    df = generated.table("causal_paths").copy()
    us = df["discovery_date"].astype("datetime64[us]")
    us.iloc[5] = np.datetime64("2999-01-01", "us")  # beyond the nanosecond range
    df["discovery_date"] = us
    result = schema_gate("causal_paths", df, "raw_causal_paths")
    count, cases = _named(result, "discovery_date", "coerce_dtype('datetime64[ns]')")
    assert count == 1 and 5 in cases


@pytest.mark.parametrize(("table", "column"), _columns("datetime"))
def test_a_time_beyond_now_plus_tolerance_fails(generated, table, column):
    anchor = pd.Timestamp(generated.spec.anchor)
    late = anchor + TOLERANCE + pd.Timedelta(seconds=1)
    df = generated.table(table).copy()
    df.at[2, column] = late
    result = schema_gate(table, df, f"raw_{table}", now=anchor, future_tolerance=TOLERANCE)
    count, cases = _named(result, column, FUTURE)
    assert count == 1 and cases == {2: str(late)}
    # Without the run time the rule is not applied (callers that do not pass it).
    without = schema_gate(table, df, f"raw_{table}")
    assert not any(FUTURE in k for k in _counts(without))


@pytest.mark.parametrize("table", INPUT_TABLES)
def test_times_just_inside_the_tolerance_pass(generated, table):
    anchor = pd.Timestamp(generated.spec.anchor)
    df = generated.table(table).copy()
    for col in TABLES[table].columns:
        if col.dtype == "datetime":  # every time of the row: row rules keep holding
            df.at[2, col.name] = anchor + TOLERANCE - pd.Timedelta(seconds=1)
    result = schema_gate(table, df, f"raw_{table}", now=anchor, future_tolerance=TOLERANCE)
    assert result.passed is True, result.description


def test_trigger_in_2099_fails_with_zero_tolerance_by_default(generated):
    anchor = pd.Timestamp(generated.spec.anchor)
    df = generated.table("triggers").copy()
    df.at[0, "trigger_timestamp"] = pd.Timestamp("2099-06-01")
    result = schema_gate("triggers", df, "raw_triggers", now=anchor.to_pydatetime())
    count, cases = _named(result, "trigger_timestamp", "not_after_now+0:00:00")
    assert cases == {0: "2099-06-01 00:00:00"}


@pytest.mark.parametrize("sign", [1, -1], ids=["+inf", "-inf"])
@pytest.mark.parametrize(("table", "column"), _columns("float"))
def test_infinities_fail_every_float_column(generated, table, column, sign):
    df = generated.table(table).copy()
    df.at[3, column] = sign * np.inf
    result = schema_gate(table, df, f"raw_{table}")
    count, cases = _named(result, column, "finite")
    assert count == 1 and cases == {3: str(sign * np.inf)}


@pytest.mark.parametrize(
    ("table", "column"),
    [("treatment_events", "cost"), ("agent_activities", "processing_duration_ms")],
)
def test_inf_in_a_column_with_only_a_minimum_fails_from_csv_text(
    generated, tmp_path, table, column
):
    df = generated.table(table).copy()
    df.at[1, column] = np.inf
    df.at[4, column] = -np.inf
    raw = _land(tmp_path, table, df, "csv")
    assert raw.at[1, column] == "inf"
    result = schema_gate(table, raw, f"raw_{table}")
    count, cases = _named(result, column, "finite")
    assert count == 2 and cases == {1: "inf", 4: "-inf"}


def test_nan_in_a_non_nullable_float_column_is_a_null_failure(generated):
    df = generated.table("treatment_events").copy()
    df.at[6, "cost"] = np.nan
    result = schema_gate("treatment_events", df, "raw_treatment_events")
    count, cases = _named(result, "cost", "not_nullable")
    assert count == 1 and 6 in cases
    # In a nullable column a null is fine, and it is not "non-finite".
    triggers = generated.table("triggers").copy()
    triggers.at[6, "outcome_value"] = np.nan
    assert schema_gate("triggers", triggers, "raw_triggers").passed is True


def _predictions(anchor, n=40) -> pd.DataFrame:
    """A batch of scores shaped as patient_risk_scores writes them (tz-aware, arrow)."""
    value = np.linspace(0.01, 0.99, n)
    cls = (value >= 0.5).astype("int64")
    stamp = pd.Timestamp(anchor).tz_localize("UTC") - pd.Timedelta(minutes=30)
    text = "string[pyarrow]"
    return pd.DataFrame(
        {
            "prediction_id": pd.Series([f"PRED{i:08d}" for i in range(n)], dtype=text),
            "model_version": pd.Series(["sha-0123456789ab"] * n, dtype=text),
            "patient_id": pd.Series([f"PAT{i:08d}" for i in range(n)], dtype=text),
            "prediction_timestamp": pd.Series([stamp] * n, dtype="datetime64[ns, UTC]"),
            "prediction_type": pd.Series(["churn"] * n, dtype=text),
            "prediction_value": value,
            "prediction_class": cls,
            "confidence_score": np.where(cls == 1, value, 1 - value),
        }
    )


def _valid_rows(generated, table):
    if table in INPUT_TABLES:
        return generated.table(table).copy()
    return _predictions(generated.spec.anchor)


@pytest.mark.parametrize("table", list(TABLES))
def test_every_tables_valid_rows_pass_with_the_run_time(generated, table):
    anchor = generated.spec.anchor
    df = _valid_rows(generated, table)
    result = schema_gate(table, df, f"raw_{table}", now=anchor, future_tolerance=TOLERANCE)
    assert result.passed is True, result.description
    assert result.metadata["failing_rows"].value == 0


@pytest.mark.parametrize("table", INPUT_TABLES)
def test_a_csv_landing_file_types_to_exactly_the_parquet_values(generated, tmp_path, table):
    """Text is parsed without loss: a CSV round trip validates to the typed frame."""
    df = generated.table(table)
    from_csv = validate(table, _land(tmp_path, table, df, "csv"))
    from_parquet = validate(table, _land(tmp_path, table, df, "parquet"))
    for col in TABLES[table].column_names:
        a, b = from_csv[col], from_parquet[col]
        assert a.dtype == b.dtype, col
        assert a.isna().equals(b.isna()), col
        assert (a[a.notna()].astype(object) == b[b.notna()].astype(object)).all(), col


def test_summary_names_the_problems_with_counts(generated):
    df = generated.table("patient_journeys").copy()
    df.loc[:4, "disease_severity"] = 11.0
    df.loc[5:7, "age_group"] = "unknown"
    result = schema_gate("patient_journeys", df, "raw_patient_journeys")
    text = result.description
    assert "8 of 300 rows fail the patient_journeys contract (2 distinct problems: " in text
    assert "disease_severity: less_than_or_equal_to(10.0) (5); age_group: isin(" in text
    assert text.endswith("(3))")
    # The sample shows every problem, not just the most frequent one.
    assert {s["column"] for s in result.metadata["failure_sample"].data} == {
        "disease_severity",
        "age_group",
    }


def test_summary_names_the_first_problems_then_how_many_more(generated):
    df = generated.table("hcp_profiles").copy()
    for i, col in enumerate(["priority_tier", "decile", "years_experience"]):
        df.loc[: 6 - i, col] = 99
    for col in ["digital_engagement_score", "peer_influence_score"]:
        df.loc[0, col] = 2.0
    df.loc[0, "state"] = "Texas"
    df = df.drop(columns=["territory_id"])
    result = schema_gate("hcp_profiles", df, "raw_hcp_profiles")
    text = result.description
    assert text.index("priority_tier: less_than_or_equal_to(5) (7)") < text.index("decile")
    assert "; and 1 more; missing columns ['territory_id'])" in text


def test_a_value_that_cannot_be_typed_is_reported_once(generated):
    """No follow-on type errors of range checks on the untyped text (as before)."""
    (table, mutate), column, check = RULE_FAMILIES["dtype"]
    result = schema_gate(table, mutate(generated.table(table)), f"raw_{table}")
    assert result.metadata["failure_counts"].data == {f"{column}: {check}": 1}
    assert result.metadata["failure_sample"].data == [
        {"column": column, "check": check, "failure_case": "twelve", "row": 0}
    ]


def test_numeric_text_is_read_exactly_and_anything_else_is_named(generated):
    df = generated.table("agent_activities").copy()
    df["records_processed"] = df["records_processed"].astype(str).astype(object)
    df["processing_duration_ms"] = df["processing_duration_ms"].map(repr).astype(object)
    df.loc[:3, "records_processed"] = ["12", "12.0", "1e3", " 7 "]  # integers, as text
    typed = validate("agent_activities", df)
    assert typed.loc[:3, "records_processed"].tolist() == [12, 12, 1000, 7]
    assert (
        typed["processing_duration_ms"]
        == generated.table("agent_activities")["processing_duration_ms"]
    ).all()  # 17-digit text reads back to the same float
    bad = ["12.5", "1,5", "abc", "inf", "9223372036854775808"]  # the last is 2**63
    df.loc[4:8, "records_processed"] = bad
    df.loc[9, "processing_duration_ms"] = "12 ms"
    result = schema_gate("agent_activities", df, "raw_agent_activities")
    count, cases = _named(result, "records_processed", "coerce_dtype('int64')")
    assert count == len(bad) and cases == dict(zip(range(4, 9), bad, strict=True))
    count, cases = _named(result, "processing_duration_ms", "coerce_dtype('float64')")
    assert count == 1 and cases == {9: "12 ms"}
    assert result.metadata["failing_rows"].value == len(bad) + 1


def test_a_structural_problem_alone_is_summarised_with_no_failing_row(generated):
    df = generated.table("triggers").drop(columns=["priority", "delivery_channel"])
    result = schema_gate("triggers", df, "raw_triggers")
    assert result.description == (
        f"raw_triggers: 0 of {len(df)} rows fail the triggers contract (2 distinct problems: "
        "missing columns ['delivery_channel', 'priority'])"
    )
    assert result.metadata["failure_counts"].data == {
        "delivery_channel: missing column": 1,
        "priority: missing column": 1,
    }
    assert result.metadata["failing_rows"].value == 0
    assert "failure_sample" not in result.metadata  # no row to show
    extra = schema_gate("triggers", generated.table("triggers").assign(colour="red"), "raw")
    assert extra.description.endswith("(1 distinct problem: unexpected columns ['colour'])")
    assert extra.metadata["failure_counts"].data == {"colour: unexpected column": 1}
    assert extra.metadata["extra_columns"].data == ["colour"]
    assert extra.metadata["missing_columns"].data == []


def test_a_pass_says_how_many_rows_satisfy_the_contract(generated):
    df = generated.table("triggers")
    result = schema_gate("triggers", df, "raw_triggers")
    assert result.description == f"raw_triggers: all {len(df)} rows satisfy the triggers contract"
    assert result.metadata["rows_checked"].value == len(df)
    assert result.metadata["severity_applied"].value == "none"


def test_the_summary_names_five_problems_then_how_many_more():
    from e2i_platform.lib.schema_gate import SUMMARY_PROBLEMS, describe_problems

    assert SUMMARY_PROBLEMS == 5
    counts = {f"c{i}: check": 10 - i for i in range(5)}
    counts["gone: missing column"] = 1
    counts["odd: unexpected column"] = 1
    assert describe_problems(counts) == (
        "c0: check (10); c1: check (9); c2: check (8); c3: check (7); c4: check (6)"
    )
    counts["c5: check"] = 20
    assert describe_problems(counts) == (
        "c5: check (20); c0: check (10); c1: check (9); c2: check (8); c3: check (7); and 1 more"
    )
    assert describe_problems({"a: x": 1, "b: y": 1}, limit=1) == "a: x (1); and 1 more"


def test_equally_frequent_problems_keep_the_order_pandera_found_them(generated):
    df = generated.table("patient_journeys").copy()
    df.loc[:2, "journey_stage"] = "remission"  # journey_stage precedes age_group in the model
    df.loc[5:7, "age_group"] = "unknown"
    result = schema_gate("patient_journeys", df, "raw_patient_journeys")
    assert [k.split(":")[0] for k in result.metadata["failure_counts"].data] == [
        "journey_stage",
        "age_group",
    ]
    problems = result.description.split("problems: ")[1]
    assert problems.index("journey_stage: isin(") < problems.index("age_group: isin(")


def test_a_failure_case_without_a_row_is_sampled_with_row_none():
    from e2i_platform.lib.schema_gate import summarize_failures

    # Pandera gives a frame-level case no index; a column of indices with a gap is float.
    cases = pd.DataFrame(
        {
            "column": ["triggers", "priority"],
            "check": ["a_frame_check", "isin(['low'])"],
            "failure_case": ["False", "urgent"],
            "index": [np.nan, 3.0],
        }
    )
    found = summarize_failures("triggers", cases)
    assert [s["row"] for s in found["sample"]] == [None, 3]
    assert found["failing_rows"] == 1
    assert found["failure_counts"] == {"triggers: a_frame_check": 1, "priority: isin(['low'])": 1}


def test_an_int_a_float_cannot_hold_exactly_is_named_and_one_it_can_passes(generated):
    """Integers landed in a float column: 2**53 + 1 has no float (it would round), 2**60
    has one; the exact comparison decides, not the float."""
    df = generated.table("business_metrics").head(4).copy()
    df["value"] = pd.Series([2**53 + 1, 2**60, 3, 4], dtype="int64")
    result = schema_gate("business_metrics", df, "raw_business_metrics")
    count, cases = _named(result, "value", "coerce_dtype('float64')")
    assert count == 1 and set(cases) == {0}


def test_the_int64_bounds_are_exact_at_both_ends(generated):
    df = generated.table("hcp_profiles").head(4).copy().astype({"years_experience": object})
    low, high = -(2**63), 2**63 - 1
    df["years_experience"] = [str(low - 1), str(low), str(high), str(high + 1)]
    result = schema_gate("hcp_profiles", df, "raw_hcp_profiles")
    _, cases = _named(result, "years_experience", "coerce_dtype('int64')")
    assert set(cases) == {0, 3}  # the two just outside; the bounds themselves are typed


def test_a_missing_column_does_not_stop_the_others_being_typed(generated, tmp_path):
    """A landing file without its first column: that column is reported, and every
    other column is still typed (a CSV's text passes as before)."""
    df = generated.table("treatment_events").head(20)
    first = TABLES["treatment_events"].columns[0].name
    landed = _land(tmp_path, "treatment_events", df.drop(columns=[first]), "csv")
    result = schema_gate("treatment_events", landed, "raw_treatment_events")
    assert result.passed is False
    assert set(result.metadata["failure_counts"].data) == {f"{first}: missing column"}


def test_nullable_booleans_without_a_null_are_booleans(generated):
    df = generated.table("treatment_events").head(20).copy()
    df["adverse_event_flag"] = df["adverse_event_flag"].astype("boolean")
    result = schema_gate("treatment_events", df, "raw_treatment_events")
    assert result.passed is True, result.description
