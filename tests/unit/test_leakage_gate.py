"""The no_leakage gate fails on each kind of leak, with evidence."""

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from e2i_platform.training.dataset import DatasetSpec, chronological_split
from e2i_platform.training.leakage import leakage_gate

GAP_DAYS = 60  # config/training.yaml: dataset.outcome_window_days
AUC_KEY = "features with single-feature AUC > 0.95"
EPOCH = pd.Timestamp("1970-01-01", tz="UTC")


def _epoch(cutoff) -> pd.Series:
    return (cutoff - EPOCH) // pd.Timedelta(seconds=1)


@pytest.fixture
def clean() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 400
    # One cutoff per split, 70 days apart: what chronological_split leaves with cutoffs
    # every 14 days and a 60-day outcome window.
    cutoffs = pd.to_datetime(["2026-01-05", "2026-03-16", "2026-05-25"], utc=True)
    cutoff = cutoffs[np.repeat([0, 1, 2], [200, 100, 100])]
    return pd.DataFrame(
        {
            "patient_id": [f"PAT{i:08d}" for i in range(n)],
            "event_timestamp": cutoff,
            "label": (rng.random(n) < 0.2).astype("int64"),
            "split": np.repeat(["train", "validation", "test"], [200, 100, 100]),
            "patient_features__events_total": rng.integers(0, 30, n),
            "patient_features__snapshot_epoch": _epoch(cutoff) - 86400,
        }
    )


def _realistic(outcome_window_days: int = GAP_DAYS) -> pd.DataFrame:
    """Entity rows at cutoffs every 14 days, as join_features returns them (features of
    every dtype, a view unmatched on some rows, honest signal), split by the product's
    own chronological_split."""
    rng = np.random.default_rng(7)
    n_patients, cutoffs = 1500, pd.date_range("2025-01-06", periods=36, freq="14D", tz="UTC")
    risk = rng.normal(size=n_patients)
    # Each patient is at risk from the cutoff their journey starts for a few cutoffs.
    start = rng.integers(0, len(cutoffs), n_patients)
    stay = rng.integers(1, 9, n_patients)
    patient = np.repeat(np.arange(n_patients), stay)
    at = np.repeat(start, stay) + np.concatenate([np.arange(k) for k in stay])
    keep = at < len(cutoffs)
    df = pd.DataFrame({"patient": patient[keep], "event_timestamp": cutoffs[at[keep]]})
    n = len(df)
    r = risk[df["patient"]] + rng.normal(scale=1.0, size=n)
    label = (r > np.quantile(r, 0.92)).astype("int64")
    epoch = _epoch(df["event_timestamp"])
    insurance = np.array(["commercial", "medicare", "medicaid", "cash", "other"])
    ages = pd.Categorical(rng.choice(["18-34", "35-49", "50-64", "65+"], n))
    out = pd.DataFrame(
        {
            "patient_id": [f"PAT{p:08d}" for p in df["patient"]],
            "hcp_id": [f"HCP{p % 40:08d}" for p in df["patient"]],
            "event_timestamp": df["event_timestamp"],
            "label": label,
            "patient_features__events_total": rng.poisson(np.exp(1.5 + 0.4 * risk[df["patient"]])),
            "patient_features__engagement_score": rng.normal(size=n) - 0.3 * r,
            "patient_features__insurance_type": pd.array(
                insurance[(df["patient"] % 5).to_numpy()], dtype="string"
            ),
            "patient_features__age_group": ages,
            "patient_features__snapshot_epoch": epoch - rng.integers(0, 2 * 86400, n),
            "hcp_features__decile": (df["patient"] % 40 // 4 + 1).astype("int64"),
            "hcp_features__is_key_account": pd.array(df["patient"] % 40 < 10, dtype="boolean"),
            "hcp_features__snapshot_epoch": epoch - 3600,
            "market_features__net_sales_30d": rng.gamma(2.0, 1e5, n),
            "market_features__snapshot_epoch": epoch - 86400,
        }
    )
    hcp = [c for c in out.columns if c.startswith("hcp_features__")]
    unmatched = rng.random(n) < 0.1  # Feast found no HCP row: the whole view is null
    out.loc[unmatched, hcp] = None
    spec = DatasetSpec(
        cutoff_every_days=14,
        outcome_window_days=outcome_window_days,
        history_days=520,
        validation_fraction=0.2,
        test_fraction=0.2,
    )
    dataset, _ = chronological_split(out, spec)
    return dataset


def _gate(df):
    return leakage_gate(
        df,
        max_single_feature_auc=0.95,
        prevalence_min=0.03,
        prevalence_max=0.6,
        split_gap_days=GAP_DAYS,
        max_text_singleton_share=0.5,
    )


def _assert_fails(result, counts: dict[str, int]) -> None:
    assert result.passed is False and result.severity == dg.AssetCheckSeverity.ERROR
    assert result.metadata["failure_counts"].data == counts


def test_clean_dataset_passes(clean):
    result = _gate(clean)
    assert result.passed, result.description
    assert result.metadata["prevalence"].value == pytest.approx(clean["label"].mean())
    assert result.metadata["split_gap_days"].data == {
        "train->validation": 70.0,
        "validation->test": 70.0,
    }


def test_realistic_dataset_split_by_the_product_passes():
    df = _realistic()
    result = _gate(df)
    assert result.passed, result.description
    auc = result.metadata["single_feature_auc"].data
    # Every feature, of every dtype, is scored; real signal is seen and is not a leak.
    assert set(auc) == {
        "patient_features__events_total",
        "patient_features__engagement_score",
        "patient_features__insurance_type",
        "patient_features__age_group",
        "hcp_features__decile",
        "hcp_features__is_key_account",
        "market_features__net_sales_30d",
    }
    assert 0.6 < result.metadata["max_single_feature_auc"].value < 0.95
    assert min(result.metadata["split_gap_days"].data.values()) >= GAP_DAYS
    assert result.metadata["split_gap_limit_days"].value == GAP_DAYS


def test_patient_in_two_splits_fails(clean):
    clean.loc[300, "patient_id"] = clean.loc[0, "patient_id"]
    _assert_fails(_gate(clean), {"patients in more than one split": 1})


def test_feature_from_after_the_cutoff_fails(clean):
    clean.loc[[5, 6], "patient_features__snapshot_epoch"] += 3 * 86400
    result = _gate(clean)
    _assert_fails(result, {"feature values from after the row's cutoff": 2})
    assert result.metadata["failing_rows"].value == 2


def test_feature_that_mirrors_the_label_fails(clean):
    clean["patient_features__days_since_stop"] = clean["label"] * 10.0
    result = _gate(clean)
    _assert_fails(result, {AUC_KEY: 1})
    first = result.metadata["failure_sample"].data[0]
    assert first["column"] == "patient_features__days_since_stop"
    assert first["observed_auc"] == 1.0 and first["limit"] == 0.95


@pytest.mark.parametrize("flipped", [0, 8], ids=["copy", "near_copy"])
def test_bool_copy_of_the_label_fails(clean, flipped):
    copy = clean["label"].astype(bool).to_numpy()
    copy[:flipped] = ~copy[:flipped]  # 2% of rows disagree with the label
    clean["patient_features__is_stopping"] = copy
    result = _gate(clean)
    _assert_fails(result, {AUC_KEY: 1})
    first = result.metadata["failure_sample"].data[0]
    assert first["column"] == "patient_features__is_stopping"
    assert 0.95 < first["observed_auc"] <= 1.0


@pytest.mark.parametrize("dtype", ["object", "string"])
def test_text_copy_of_the_label_fails(clean, dtype):
    clean["patient_features__will_stop"] = pd.Series(
        np.where(clean["label"] == 1, "yes", "no"), dtype=dtype
    )
    result = _gate(clean)
    _assert_fails(result, {AUC_KEY: 1})
    assert result.metadata["failure_sample"].data[0]["column"] == "patient_features__will_stop"
    assert result.metadata["single_feature_auc"].data["patient_features__will_stop"] == 1.0


def test_categorical_copy_of_the_label_fails(clean):
    clean["patient_features__outcome"] = pd.Categorical(
        np.where(clean["label"] == 1, "stopped", "continued")
    )
    result = _gate(clean)
    _assert_fails(result, {AUC_KEY: 1})
    assert result.metadata["failure_sample"].data[0]["column"] == "patient_features__outcome"


@pytest.mark.parametrize("value", [np.nan, None], ids=["float", "object"])
def test_all_null_feature_fails(clean, value):
    clean["patient_features__cost_90d"] = value
    result = _gate(clean)
    _assert_fails(result, {"all-null feature columns": 1})
    assert result.metadata["failure_sample"].data[0]["column"] == "patient_features__cost_90d"


def test_view_without_its_snapshot_epoch_column_fails(clean):
    clean["hcp_features__decile"] = np.arange(len(clean)) % 10 + 1  # epoch column never joined
    result = _gate(clean)
    _assert_fails(result, {"views without a snapshot-epoch column": 1})
    first = result.metadata["failure_sample"].data[0]
    assert first["view"] == "hcp_features"
    assert first["column"] == "hcp_features__snapshot_epoch"


def test_snapshot_epoch_column_dropped_fails(clean):
    # Without its epoch the "nothing after the cutoff" rule would check nothing for the view.
    clean.loc[[5, 6], "patient_features__snapshot_epoch"] += 3 * 86400
    result = _gate(clean.drop(columns="patient_features__snapshot_epoch"))
    _assert_fails(result, {"views without a snapshot-epoch column": 1})


def test_rows_with_features_but_no_snapshot_epoch_fail(clean):
    clean["patient_features__snapshot_epoch"] = clean["patient_features__snapshot_epoch"].astype(
        "float64"
    )
    clean.loc[[3, 4, 5], "patient_features__snapshot_epoch"] = np.nan
    result = _gate(clean)
    _assert_fails(result, {"rows with a view's features but no snapshot epoch": 3})
    assert result.metadata["failing_rows"].value == 3


def test_train_cutoff_after_validation_and_test_fails(clean):
    clean.loc[0, "event_timestamp"] = pd.Timestamp("2026-06-01", tz="UTC")  # a train row
    result = _gate(clean)
    _assert_fails(result, {"splits out of chronological order": 1})
    first = result.metadata["failure_sample"].data[0]
    assert first["splits"] == "train->validation"
    assert first["last_cutoff"].startswith("2026-06-01")
    assert first["observed_gap_days"] < 0


def test_validation_cutoff_after_test_fails(clean):
    clean.loc[250, "event_timestamp"] = pd.Timestamp("2026-06-01", tz="UTC")  # a validation row
    result = _gate(clean)
    _assert_fails(result, {"splits out of chronological order": 1})
    assert result.metadata["failure_sample"].data[0]["splits"] == "validation->test"


def test_gap_between_splits_smaller_than_the_outcome_window_fails(clean):
    validation = clean["split"] == "validation"
    clean.loc[validation, "event_timestamp"] = pd.Timestamp("2026-03-02", tz="UTC")  # 56 days
    clean.loc[validation, "patient_features__snapshot_epoch"] = (
        _epoch(clean.loc[validation, "event_timestamp"]) - 86400
    )
    result = _gate(clean)
    _assert_fails(result, {"split gaps shorter than 60 days": 1})
    first = result.metadata["failure_sample"].data[0]
    assert first["splits"] == "train->validation"
    assert first["observed_gap_days"] == 56.0 and first["limit_gap_days"] == 60


def test_split_built_with_a_shorter_gap_than_configured_fails():
    # Split with a 14-day gap, checked against the configured 60-day outcome window.
    result = _gate(_realistic(outcome_window_days=14))
    _assert_fails(result, {"split gaps shorter than 60 days": 2})


def test_id_like_text_feature_fails(clean):
    clean["patient_features__note"] = [f"{y}-{i}" for i, y in enumerate(clean["label"])]
    result = _gate(clean)
    _assert_fails(result, {"ID-like text feature columns": 1})
    first = result.metadata["failure_sample"].data[0]
    assert first["column"] == "patient_features__note"
    assert first["observed_singleton_share"] == 1.0 and first["limit"] == 0.5


def test_high_cardinality_text_without_signal_is_scored_out_of_fold(clean):
    # ~3 rows per value: in-sample category rates would look predictive; out of fold not.
    rng = np.random.default_rng(1)
    clean["patient_features__hcp_code"] = [f"C{v}" for v in rng.integers(0, 130, len(clean))]
    result = _gate(clean)
    assert result.passed, result.description
    assert result.metadata["single_feature_auc"].data["patient_features__hcp_code"] < 0.7


def test_feature_with_nulls_is_scored_on_its_non_null_rows(clean):
    rng = np.random.default_rng(2)
    copy = clean["label"].astype("float64")
    copy[rng.random(len(clean)) < 0.3] = np.nan
    clean["patient_features__stop_score"] = copy
    clean["patient_features__noise"] = np.where(rng.random(len(clean)) < 0.3, np.nan, 1.0)
    result = _gate(clean)
    _assert_fails(result, {AUC_KEY: 1})
    assert result.metadata["failure_sample"].data[0]["column"] == "patient_features__stop_score"


def test_null_pattern_that_predicts_the_label_fails(clean):
    # Non-null only on label-1 rows: nothing to rank among non-null rows, the nulls leak.
    clean["patient_features__days_to_stop"] = np.where(clean["label"] == 1, 12.0, np.nan)
    result = _gate(clean)
    _assert_fails(result, {"features whose nulls predict the label (AUC > 0.95)": 1})
    assert result.metadata["failure_sample"].data[0]["column"] == "patient_features__days_to_stop"


def test_label_derived_column_and_prevalence_outside_band_fail(clean):
    clean["patient_features__journey_status"] = "active"
    clean["label"] = 0
    _assert_fails(
        _gate(clean),
        {"label-derived feature columns": 1, "label prevalence outside band": 1},
    )
