"""The no_leakage gate fails on each kind of leak, with evidence."""

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from e2i_platform.training.checks import leakage_gate


@pytest.fixture
def clean() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 400
    cutoffs = pd.to_datetime(["2026-01-05", "2026-03-02", "2026-05-04"], utc=True)
    cutoff = cutoffs[np.repeat([0, 1, 2], [200, 100, 100])]
    epoch = (cutoff - pd.Timestamp("1970-01-01", tz="UTC")) // pd.Timedelta(seconds=1)
    return pd.DataFrame(
        {
            "patient_id": [f"PAT{i:08d}" for i in range(n)],
            "event_timestamp": cutoff,
            "label": (rng.random(n) < 0.2).astype("int64"),
            "split": np.repeat(["train", "validation", "test"], [200, 100, 100]),
            "patient_features__events_total": rng.integers(0, 30, n),
            "patient_features__snapshot_epoch": epoch - 86400,
        }
    )


def _gate(df):
    return leakage_gate(df, max_abs_corr=0.95, prevalence_min=0.03, prevalence_max=0.6)


def test_clean_dataset_passes(clean):
    result = _gate(clean)
    assert result.passed, result.description
    assert result.metadata["prevalence"].value == pytest.approx(clean["label"].mean())


def test_patient_in_two_splits_fails(clean):
    clean.loc[300, "patient_id"] = clean.loc[0, "patient_id"]
    result = _gate(clean)
    assert result.passed is False and result.severity == dg.AssetCheckSeverity.ERROR
    assert result.metadata["failure_counts"].data == {"patients in more than one split": 1}


def test_feature_from_after_the_cutoff_fails(clean):
    clean.loc[[5, 6], "patient_features__snapshot_epoch"] += 3 * 86400
    result = _gate(clean)
    assert result.metadata["failure_counts"].data == {
        "feature values from after the row's cutoff": 2
    }
    assert result.metadata["failing_rows"].value == 2


def test_feature_that_mirrors_the_label_fails(clean):
    clean["patient_features__days_since_stop"] = clean["label"] * 10.0
    result = _gate(clean)
    assert result.metadata["failure_counts"].data == {"features with |corr(label)| > 0.95": 1}
    assert result.metadata["failure_sample"].data[0]["column"] == (
        "patient_features__days_since_stop"
    )


def test_label_derived_column_and_prevalence_outside_band_fail(clean):
    clean["patient_features__journey_status"] = "active"
    clean["label"] = 0
    result = _gate(clean)
    assert result.metadata["failure_counts"].data == {
        "label-derived feature columns": 1,
        "label prevalence outside band": 1,
    }
