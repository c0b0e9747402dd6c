"""Feature tables are point-in-time correct and never use label-derived columns."""

import pandas as pd
import pytest

from e2i_platform.contract import LABEL_DERIVED
from e2i_platform.contract.pandera_models import validate
from e2i_platform.features import compute
from e2i_platform.features.specs import EVENT_TIMESTAMP, SERVICE_VIEWS, VIEWS


@pytest.fixture(scope="module")
def tables(generated):
    names = ("hcp_profiles", "patient_journeys", "treatment_events", "triggers", "business_metrics")
    return {n: validate(n, generated.table(n)) for n in names}


def test_snapshots_are_weekly_and_end_at_the_data_as_of_time(tables):
    as_of, snaps = compute.snapshot_plan({"patient_journeys": tables["patient_journeys"]}, weeks=8)
    assert as_of == max(
        tables["patient_journeys"]["ingestion_timestamp"].max(),
        tables["patient_journeys"]["source_timestamp"].max(),
    )
    assert snaps[-1] == as_of and len(snaps) == 8 + 1
    assert snaps[-2] < as_of
    gaps = {b - a for a, b in zip(snaps[:-2], snaps[1:-1], strict=True)}
    assert gaps == {pd.Timedelta(weeks=1)}
    assert all(s.weekday() == 0 and s == s.normalize() for s in snaps[:-1])


def test_patient_features_use_only_events_known_at_the_snapshot(tables):
    journeys, events = tables["patient_journeys"], tables["treatment_events"]
    _, snaps = compute.snapshot_plan({"patient_journeys": journeys}, weeks=6)
    features = compute.patient_features(journeys, events, snaps, pd.Timestamp.now())
    sample = features.sample(40, random_state=1)
    for row in sample.itertuples(index=False):
        t = row.event_timestamp.tz_convert(None)
        own = events[(events["patient_id"] == row.patient_id) & (events["event_date"] <= t)]
        recent = own[own["event_date"] > t - pd.Timedelta(days=90)]
        assert row.events_total == len(own)
        assert row.events_90d == len(recent)
        assert row.adverse_events_90d == int(recent["adverse_event_flag"].sum())
        assert row.cost_90d == pytest.approx(recent["cost"].sum())
        assert row.days_since_last_event == pytest.approx(
            (t - own["event_date"].max()) / pd.Timedelta(days=1)
        )


def test_no_feature_is_label_derived():
    forbidden = {c for cols in LABEL_DERIVED.values() for c in cols}
    forbidden |= {"discontinuation", "journey_status", "journey_end"}
    for view in VIEWS.values():
        for name in view.feature_names:
            assert not any(word in name for word in forbidden), (view.name, name)
    assert set(SERVICE_VIEWS) == set(VIEWS)


def test_every_view_has_its_declared_columns_and_utc_timestamps(tables):
    now = pd.Timestamp.now()
    _, snaps = compute.snapshot_plan({"patient_journeys": tables["patient_journeys"]}, weeks=4)
    frames = {
        "patient_features": compute.patient_features(
            tables["patient_journeys"], tables["treatment_events"], snaps, now
        ),
        "hcp_features": compute.hcp_features(
            tables["hcp_profiles"],
            tables["patient_journeys"],
            tables["treatment_events"],
            snaps,
            now,
        ),
        "trigger_features": compute.trigger_features(
            tables["triggers"], tables["patient_journeys"], snaps, now
        ),
        "market_features": compute.market_features(tables["business_metrics"], snaps, now),
    }
    for name, df in frames.items():
        assert list(df.columns) == list(VIEWS[name].columns)
        assert str(df[EVENT_TIMESTAMP].dt.tz) == "UTC"
        assert len(df) > 0
        keys = list(VIEWS[name].join_keys)
        assert not df.duplicated([*keys, EVENT_TIMESTAMP]).any()
