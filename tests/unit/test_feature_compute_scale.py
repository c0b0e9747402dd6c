"""The one-pass feature tables equal a plain per-snapshot computation, value for value,
and a value stamped at a snapshot never depends on anything later."""

import io

import pandas as pd
import pytest

from e2i_platform.contract.pandera_models import validate
from e2i_platform.features import compute
from e2i_platform.features.specs import CREATED_TIMESTAMP, EVENT_TIMESTAMP, SNAPSHOT_EPOCH, VIEWS

DAY = pd.Timedelta(days=1)
CREATED = pd.Timestamp("2030-01-01 12:00:00")
NAMES = ("hcp_profiles", "patient_journeys", "treatment_events", "triggers", "business_metrics")


@pytest.fixture(scope="module")
def snapshots(generated):
    _, weekly = compute.snapshot_plan({"patient_journeys": generated.table("patient_journeys")}, 78)
    # Every fourth week keeps the reference quick; the first snapshot precedes all data.
    return [weekly[0] - 1000 * DAY, *weekly[::4], weekly[-1]]


@pytest.fixture(scope="module")
def tables(generated, snapshots):
    """Validated tables as the assets read them (Parquet), plus rows on every boundary:
    times exactly at a snapshot and exactly a window length before one, and journeys of
    one patient starting at the same time (a tie for "the latest journey")."""
    out = {}
    for name in NAMES:
        buf = io.BytesIO()
        validate(name, generated.table(name)).to_parquet(buf, index=False)
        out[name] = pd.read_parquet(buf)

    def on_boundaries(df, column, windows, seed):
        times = [t - w * DAY for t in snapshots[1:] for w in (0, *windows)] * 2
        rows = df.sample(len(times), replace=True, random_state=seed)
        rows[column] = times
        return pd.concat([df, rows], ignore_index=True)

    out["treatment_events"] = on_boundaries(out["treatment_events"], "event_date", (90, 180), 1)
    out["triggers"] = on_boundaries(out["triggers"], "trigger_timestamp", (30, 90), 2)
    out["business_metrics"] = on_boundaries(out["business_metrics"], "metric_date", (30,), 3)
    out["hcp_profiles"].loc[:4, "updated_at"] = snapshots[5]
    journeys = out["patient_journeys"]
    twins = journeys.sample(60, random_state=4).assign(
        brand="Kisqali", engagement_score=1.5, disease_severity=9.0, insurance_type="cash"
    )
    out["patient_journeys"] = pd.concat(
        [journeys, twins, twins.assign(age_group="65+")], ignore_index=True
    ).sample(frac=1, random_state=5, ignore_index=True)
    return out


# --- the reference: each snapshot on its own, by filtering and grouping ----------------


def _patients(t, tb):
    journeys, events = tb["patient_journeys"], tb["treatment_events"]
    started = journeys[journeys["journey_start_date"] <= t]
    # Journeys starting together: the one listed last in the table is the latest.
    latest = started.sort_values("journey_start_date", kind="stable").groupby("patient_id").tail(1)
    latest = latest.set_index("patient_id")
    known = events[events["event_date"] <= t]
    recent = known[known["event_date"] > t - 90 * DAY].groupby("patient_id")
    known = known.groupby("patient_id")
    f = latest[["engagement_score", "disease_severity", "insurance_type", "age_group"]].copy()
    f["journeys_started"] = started.groupby("patient_id").size()
    f["events_total"] = known.size()
    f["events_90d"] = recent.size()
    f["adverse_events_90d"] = recent["adverse_event_flag"].sum()
    f["adverse_event_rate"] = known["adverse_event_flag"].mean()
    f["cost_90d"] = recent["cost"].sum().reindex(f.index, fill_value=0.0)
    f["days_since_last_event"] = (t - known["event_date"].max()) / DAY
    f["days_on_therapy"] = (t - started.groupby("patient_id")["journey_start_date"].min()) / DAY
    return f


def _hcps(t, tb):
    hcps, journeys, events = tb["hcp_profiles"], tb["patient_journeys"], tb["treatment_events"]
    profile = ["decile", "priority_tier", "years_experience"]
    f = hcps[hcps["updated_at"] <= t].set_index("hcp_id")
    f = f[[*profile, "digital_engagement_score", "peer_influence_score"]].copy()
    started = journeys[journeys["journey_start_date"] <= t]
    f["patients_treated"] = started.groupby("hcp_id")["patient_id"].nunique()
    recent = events[(events["event_date"] <= t) & (events["event_date"] > t - 180 * DAY)]
    f["patient_adverse_rate_180d"] = recent.groupby("hcp_id")["adverse_event_flag"].mean()
    return f


def _triggers(t, tb):
    journeys, triggers = tb["patient_journeys"], tb["triggers"]
    patients = journeys.loc[journeys["journey_start_date"] <= t, "patient_id"].unique()
    at = triggers["trigger_timestamp"]
    last90 = triggers[(at <= t) & (at > t - 90 * DAY)]
    last30 = last90[last90["trigger_timestamp"] > t - 30 * DAY]
    f = pd.DataFrame(index=pd.Index(patients, name="patient_id"))
    f["triggers_30d"] = last30.groupby("patient_id").size()
    f["critical_triggers_30d"] = (
        last30[last30["priority"] == "critical"].groupby("patient_id").size()
    )
    accepted = (last90["acceptance_status"] == "accepted").astype(bool)
    f["trigger_acceptance_rate_90d"] = accepted.groupby(last90["patient_id"]).mean()
    f["trigger_confidence_90d"] = last90.groupby("patient_id")["confidence_score"].mean()
    return f


def _markets(t, tb):
    metrics = tb["business_metrics"]
    window = metrics[(metrics["metric_date"] <= t) & (metrics["metric_date"] > t - 30 * DAY)]
    by = ["brand", "region"]
    f = window.groupby(by)[["achievement_rate"]].mean()
    f.columns = ["achievement_rate_30d"]
    f["market_share_30d"] = (
        window[window["metric_type"] == "market_share"].groupby(by)["value"].mean()
    )
    f["net_sales_30d"] = window[window["metric_type"] == "sales"].groupby(by)["value"].sum()
    return f


REFERENCE = {
    "patient_features": _patients,
    "hcp_features": _hcps,
    "trigger_features": _triggers,
    "market_features": _markets,
}


def reference(view, tb, snapshots):
    spec = VIEWS[view]
    frames = [REFERENCE[view](t, tb).assign(**{EVENT_TIMESTAMP: t}) for t in snapshots]
    out = pd.concat([f.reset_index() for f in frames if len(f)], ignore_index=True)
    out[EVENT_TIMESTAMP] = out[EVENT_TIMESTAMP].dt.tz_localize("UTC")
    out[CREATED_TIMESTAMP] = CREATED.tz_localize("UTC")
    epoch = pd.Timestamp("1970-01-01", tz="UTC")
    out[SNAPSHOT_EPOCH] = (out[EVENT_TIMESTAMP] - epoch) // pd.Timedelta(seconds=1)
    dtypes = {"int": "int64", "float": "float64", "str": "string[pyarrow]"}
    for f in spec.features:
        column = out[f.name].fillna(0) if f.dtype == "int" else out[f.name]
        out[f.name] = column.astype(dtypes[f.dtype])
    out = out.astype({k: "string[pyarrow]" for k in spec.join_keys})
    return out[list(spec.columns)].sort_values(
        [EVENT_TIMESTAMP, *spec.join_keys], ignore_index=True
    )


def features(view, tb, snapshots):
    journeys, events = tb["patient_journeys"], tb["treatment_events"]
    if view == "patient_features":
        return compute.patient_features(journeys, events, snapshots, CREATED)
    if view == "hcp_features":
        return compute.hcp_features(tb["hcp_profiles"], journeys, events, snapshots, CREATED)
    if view == "trigger_features":
        return compute.trigger_features(tb["triggers"], journeys, snapshots, CREATED)
    return compute.market_features(tb["business_metrics"], snapshots, CREATED)


@pytest.mark.parametrize("view", list(VIEWS))
def test_every_value_equals_the_per_snapshot_reference(view, tables, snapshots):
    got = features(view, tables, snapshots)
    assert got[EVENT_TIMESTAMP].min() > pd.Timestamp(snapshots[0]).tz_localize("UTC")
    pd.testing.assert_frame_equal(got, reference(view, tables, snapshots), check_exact=True)


def _later(tb, when, seed):
    """Every input table with rows dated `when` added: a new journey, profile, event..."""
    out = dict(tb)
    for name, column, changes in (
        ("patient_journeys", "journey_start_date", {"engagement_score": 0.5, "age_group": "65+"}),
        ("treatment_events", "event_date", {"adverse_event_flag": True, "cost": 9999.0}),
        ("triggers", "trigger_timestamp", {"priority": "critical", "confidence_score": 0.01}),
        ("business_metrics", "metric_date", {"value": 1e9, "achievement_rate": 50.0}),
    ):
        rows = tb[name].sample(40, random_state=seed).assign(**{column: when, **changes})
        out[name] = pd.concat([tb[name], rows], ignore_index=True)
    hcps = tb["hcp_profiles"]
    newcomer = hcps.head(1).assign(hcp_id="HCP99999999", updated_at=when)
    out["hcp_profiles"] = pd.concat([hcps, newcomer], ignore_index=True)
    return out


@pytest.mark.parametrize("view", list(VIEWS))
def test_rows_after_a_snapshot_change_nothing_stamped_at_or_before_it(view, tables, snapshots):
    before = features(view, tables, snapshots)
    # After the newest snapshot: no table changes at all.
    far = features(view, _later(tables, snapshots[-1] + 400 * DAY, seed=6), snapshots)
    pd.testing.assert_frame_equal(far, before, check_exact=True)
    # A second after a middle snapshot: that snapshot and the earlier ones are unchanged,
    # and the next one sees the new rows (so the check is not vacuous).
    cut = snapshots[len(snapshots) // 2]
    after = features(view, _later(tables, cut + pd.Timedelta(seconds=1), seed=7), snapshots)
    stamp = pd.Timestamp(cut).tz_localize("UTC")
    old, new = before[before[EVENT_TIMESTAMP] <= stamp], after[after[EVENT_TIMESTAMP] <= stamp]
    pd.testing.assert_frame_equal(new, old, check_exact=True)
    nxt = pd.Timestamp(snapshots[snapshots.index(cut) + 1]).tz_localize("UTC")
    keys, at_next = list(VIEWS[view].join_keys), [EVENT_TIMESTAMP]
    old = before[before[EVENT_TIMESTAMP] == nxt].set_index(keys)
    new = after[after[EVENT_TIMESTAMP] == nxt].set_index(keys)
    assert not new.reindex(old.index).drop(columns=at_next).equals(old.drop(columns=at_next))
