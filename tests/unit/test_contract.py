"""The contract is self-consistent and the generator honours it."""

from dataclasses import replace
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from pandera.errors import SchemaErrors

from e2i_platform.contract import ENUMS, INPUT_TABLES, LABEL_DERIVED, TABLES
from e2i_platform.contract.pandera_models import luhn_valid, validate
from e2i_platform.contract.tables import Column
from e2i_platform.ingest.generator import Generator


def test_every_input_table_has_a_pandera_model_that_accepts_generated_data(generated):
    for name in INPUT_TABLES:
        typed = validate(name, generated.table(name))
        assert list(typed.columns) == list(TABLES[name].column_names)
        assert len(typed) > 0


def test_luhn_accepts_real_npis_and_rejects_altered_ones():
    # 1234567893 is the CMS documentation's example of a valid NPI.
    values = pd.Series(["1234567893", "1234567890", "12345", "abcdefghij"])
    assert luhn_valid(values, "80840").tolist() == [True, False, False, False]


def test_generated_ids_match_contract_formats(generated):
    for name in INPUT_TABLES:
        df = generated.table(name)
        for col in TABLES[name].columns:
            if col.pattern:
                assert df[col.name].astype(str).str.fullmatch(col.pattern[1:-1]).all(), col.name


def test_generator_is_deterministic_for_a_spec(generated):
    again = Generator(generated.spec)
    for name in INPUT_TABLES:
        pd.testing.assert_frame_equal(generated.table(name), again.table(name))


def test_generated_data_are_referentially_consistent_and_current(generated):
    hcps = generated.table("hcp_profiles")
    journeys = generated.table("patient_journeys")
    events = generated.table("treatment_events")
    assert journeys["hcp_id"].isin(hcps["hcp_id"]).all()
    merged = events.merge(journeys, on="patient_journey_id", suffixes=("", "_j"))
    assert len(merged) == len(events)
    assert (merged["event_date"] >= merged["journey_start_date"]).all()
    assert (merged["patient_id"] == merged["patient_id_j"]).all()
    anchor = pd.Timestamp(generated.spec.anchor)
    assert anchor - events["event_date"].max() < pd.Timedelta(days=2)
    assert journeys["source_timestamp"].max() <= anchor


def test_discontinuation_signal_is_learnable_from_pre_outcome_data():
    """Payer, engagement, HCP digital reach and adverse events before the outcome
    predict discontinuation: a plain logistic regression clearly beats chance."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    from e2i_platform.ingest.generator import default_spec

    g = Generator(default_spec(patients=2000, hcps=100, seed=3))
    journeys = g.table("patient_journeys").set_index("patient_journey_id")
    events = g.table("treatment_events")
    hcps = g.table("hcp_profiles").set_index("hcp_id")
    label = events.groupby("patient_journey_id")["discontinuation_flag"].any().loc[journeys.index]
    before = events[~events["discontinuation_flag"]]
    features = pd.DataFrame(
        {
            "engagement": journeys["engagement_score"],
            "severity": journeys["disease_severity"],
            "adverse_rate": before.groupby("patient_journey_id")["adverse_event_flag"]
            .mean()
            .reindex(journeys.index, fill_value=0.0),
            "hcp_digital": hcps.loc[journeys["hcp_id"], "digital_engagement_score"].to_numpy(),
        }
    ).join(pd.get_dummies(journeys["insurance_type"], dtype=float))
    auc = cross_val_score(
        LogisticRegression(max_iter=1000), features, label, scoring="roc_auc", cv=5
    ).mean()
    assert 0.15 < label.mean() < 0.6
    assert auc > 0.68


def test_label_derived_columns_are_declared_in_the_contract():
    for name, columns in LABEL_DERIVED.items():
        assert set(columns) <= set(TABLES[name].column_names)


def test_enums_are_closed_and_used_by_columns():
    used = {c.enum for t in TABLES.values() for c in t.columns if c.enum}
    assert used <= set(ENUMS)
    assert {"brand", "region", "journey_stage", "priority", "agent_tier"} <= used


@pytest.mark.parametrize("size", [5_000])
def test_generator_scales_linearly_enough(size):
    from e2i_platform.ingest.generator import default_spec

    g = Generator(default_spec(patients=size, hcps=100))
    assert len(g.table("patient_journeys")) == size
    assert np.unique(g.table("patient_journeys")["patient_journey_id"]).size == size


def test_times_are_of_the_past_and_floats_finite_unless_the_contract_says_otherwise():
    """No column is marked today: every datetime is an observation of the past and
    every float must be finite."""
    for t in TABLES.values():
        for c in t.columns:
            assert c.future_ok is False, f"{t.name}.{c.name}"
            assert c.finite is True, f"{t.name}.{c.name}"


@pytest.mark.parametrize(
    ("column", "message"),
    [
        (Column("n", "int", "a count", future_ok=True), "future_ok applies to datetime"),
        (Column("t", "datetime", "a time", finite=False), "finite=False applies to float"),
    ],
)
def test_integrity_rejects_a_flag_on_the_wrong_dtype(monkeypatch, column, message):
    from e2i_platform.contract import tables

    odd = replace(tables.TRIGGERS, name="odd", columns=(*tables.TRIGGERS.columns, column))
    monkeypatch.setitem(tables.TABLES, "odd", odd)
    with pytest.raises(ValueError, match=message):
        tables._check_integrity()


def test_columns_marked_future_ok_or_not_finite_are_exempt(monkeypatch, generated):
    """The exemptions are explicit contract attributes, honoured by the Pandera model."""
    from e2i_platform.contract import pandera_models, tables

    flagged = tuple(
        replace(c, future_ok=True)
        if c.name == "trigger_timestamp"
        else replace(c, finite=False, max=None)  # an unbounded float that may be inf
        if c.name == "confidence_score"
        else c
        for c in tables.TRIGGERS.columns
    )
    monkeypatch.setitem(
        tables.TABLES,
        "planned_triggers",
        replace(tables.TRIGGERS, name="planned_triggers", columns=flagged),
    )
    df = generated.table("triggers").copy()
    df.at[0, "trigger_timestamp"] = pd.Timestamp("2099-01-01")
    df.at[1, "confidence_score"] = np.inf
    now = generated.spec.anchor
    try:
        typed = validate("planned_triggers", df, now=now, future_tolerance=timedelta(0))
        assert typed.at[1, "confidence_score"] == np.inf
        with pytest.raises(SchemaErrors) as exc:  # the unflagged contract refuses both
            validate("triggers", df, now=now, future_tolerance=timedelta(0))
        checks = set(exc.value.failure_cases["check"])
        assert {"finite", "not_after_now+0:00:00"} <= checks
    finally:
        pandera_models.dataframe_model.cache_clear()


def test_validate_returns_exactly_typed_values(generated):
    """What the gate accepts is what the validated assets store: typed, unchanged."""
    df = generated.table("hcp_profiles").copy()
    df["decile"] = df["decile"].astype("float64")  # integral floats: lossless
    typed = validate("hcp_profiles", df)
    assert typed["decile"].dtype == "int64"
    assert (typed["decile"].to_numpy() == generated.table("hcp_profiles")["decile"]).all()


def test_validate_never_changes_the_frame_it_checks(generated):
    """Pandera works on a shallow copy: what it coerces is replaced there, never in
    the caller's frame (which may be a published value another check reads)."""
    df = generated.table("hcp_profiles").copy()
    df["specialty"] = df["specialty"].astype("category")  # Pandera coerces it to text
    before = df.copy(deep=True)
    typed = validate("hcp_profiles", df)
    assert not isinstance(typed["specialty"].dtype, pd.CategoricalDtype)
    assert isinstance(df["specialty"].dtype, pd.CategoricalDtype)
    pd.testing.assert_frame_equal(df, before)
    # Already typed (nothing for the lossless typing to do): the same values back,
    # the caller's frame untouched.
    snapshot = typed.copy(deep=True)
    again = validate("hcp_profiles", typed)
    assert again is not typed
    pd.testing.assert_frame_equal(again, snapshot)
    pd.testing.assert_frame_equal(typed, snapshot)
