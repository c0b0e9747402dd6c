"""Feature tables: one row per entity and snapshot, stamped with the snapshot time.

Snapshots are weekly up to the data's "as of" time (the newest event time in the
validated inputs), which is itself the last snapshot. A value stamped at time t
uses only rows whose own time is <= t, so point-in-time joins see exactly what
was known then. Generated data end at the run time, so the newest snapshot is
current; historical landing data give an old newest snapshot, and the freshness
gate says so.
"""

from __future__ import annotations

from datetime import datetime

import pandas as pd

from e2i_platform.contract import TABLES
from e2i_platform.features.specs import CREATED_TIMESTAMP, EVENT_TIMESTAMP, SNAPSHOT_EPOCH, VIEWS

DAY = pd.Timedelta(days=1)


def as_of(tables: dict[str, pd.DataFrame]) -> pd.Timestamp:
    """What the inputs know up to: their newest event or load time."""
    times = []
    for name, df in tables.items():
        spec = TABLES[name]
        times += [df[c].max() for c in (spec.event_time, spec.loaded_at) if c]
    return max(times)


def snapshot_times(as_of_time: pd.Timestamp, weeks: int) -> list[pd.Timestamp]:
    """`weeks` weekly snapshots (Mondays 00:00 UTC) before `as_of_time`, then `as_of_time`."""
    last_monday = (as_of_time - pd.Timedelta(days=as_of_time.weekday())).normalize()
    if last_monday == as_of_time:
        last_monday -= pd.Timedelta(weeks=1)
    weekly = [last_monday - pd.Timedelta(weeks=k) for k in range(weeks - 1, -1, -1)]
    return [*weekly, as_of_time]


def _stamp(frames: list[pd.DataFrame], view: str, created: datetime) -> pd.DataFrame:
    spec = VIEWS[view]
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=spec.columns)
    # Feast compares event times as UTC instants: store them tz-aware.
    out[CREATED_TIMESTAMP] = pd.Timestamp(created).tz_localize("UTC")
    out[EVENT_TIMESTAMP] = pd.to_datetime(out[EVENT_TIMESTAMP]).dt.tz_localize("UTC")
    epoch = pd.Timestamp("1970-01-01", tz="UTC")
    out[SNAPSHOT_EPOCH] = (out[EVENT_TIMESTAMP] - epoch) // pd.Timedelta(seconds=1)
    for f in spec.features:
        if f.dtype == "int":
            out[f.name] = out[f.name].fillna(0).astype("int64")
        elif f.dtype == "float":
            out[f.name] = out[f.name].astype("float64")
        else:
            out[f.name] = out[f.name].astype("string[pyarrow]")
    for key in spec.join_keys:
        out[key] = out[key].astype("string[pyarrow]")
    return out[list(spec.columns)].sort_values(
        [EVENT_TIMESTAMP, *spec.join_keys], ignore_index=True
    )


def patient_features(journeys, events, snapshots, created) -> pd.DataFrame:
    frames = []
    for t in snapshots:
        started = journeys[journeys["journey_start_date"] <= t]
        if started.empty:
            continue
        latest = started.sort_values("journey_start_date").groupby("patient_id").tail(1)
        latest = latest.set_index("patient_id")
        ev = events[events["event_date"] <= t]
        recent = ev[ev["event_date"] > t - 90 * DAY]
        g_all = ev.groupby("patient_id")
        g_recent = recent.groupby("patient_id")
        f = pd.DataFrame(index=latest.index)
        f["journeys_started"] = started.groupby("patient_id").size()
        f["events_total"] = g_all.size()
        f["events_90d"] = g_recent.size()
        f["adverse_events_90d"] = g_recent["adverse_event_flag"].sum()
        f["adverse_event_rate"] = g_all["adverse_event_flag"].mean()
        f["cost_90d"] = g_recent["cost"].sum()
        f["days_since_last_event"] = (t - g_all["event_date"].max()) / DAY
        f["days_on_therapy"] = (t - started.groupby("patient_id")["journey_start_date"].min()) / DAY
        f["engagement_score"] = latest["engagement_score"]
        f["disease_severity"] = latest["disease_severity"]
        f["insurance_type"] = latest["insurance_type"]
        f["age_group"] = latest["age_group"]
        f["cost_90d"] = f["cost_90d"].fillna(0.0)
        f[EVENT_TIMESTAMP] = t
        frames.append(f.reset_index())
    return _stamp(frames, "patient_features", created)


def hcp_features(hcps, journeys, events, snapshots, created) -> pd.DataFrame:
    frames = []
    profile_cols = [
        "decile",
        "priority_tier",
        "years_experience",
        "digital_engagement_score",
        "peer_influence_score",
    ]
    for t in snapshots:
        known = hcps[hcps["updated_at"] <= t].set_index("hcp_id")
        if known.empty:
            continue
        started = journeys[journeys["journey_start_date"] <= t]
        ev = events[(events["event_date"] <= t) & (events["event_date"] > t - 180 * DAY)]
        f = known[profile_cols].copy()
        f["patients_treated"] = started.groupby("hcp_id")["patient_id"].nunique()
        f["patient_adverse_rate_180d"] = ev.groupby("hcp_id")["adverse_event_flag"].mean()
        f[EVENT_TIMESTAMP] = t
        frames.append(f.reset_index())
    return _stamp(frames, "hcp_features", created)


def trigger_features(triggers, journeys, snapshots, created) -> pd.DataFrame:
    """Every patient with a journey gets a row: no trigger is a fact (zero counts)."""
    frames = []
    for t in snapshots:
        patients = journeys.loc[journeys["journey_start_date"] <= t, "patient_id"].unique()
        if len(patients) == 0:
            continue
        seen = triggers[
            (triggers["trigger_timestamp"] <= t) & (triggers["trigger_timestamp"] > t - 90 * DAY)
        ]
        last30 = seen[seen["trigger_timestamp"] > t - 30 * DAY]
        g90 = seen.groupby("patient_id")
        f = pd.DataFrame(index=pd.Index(patients, name="patient_id"))
        f["triggers_30d"] = last30.groupby("patient_id").size()
        f["critical_triggers_30d"] = (
            last30[last30["priority"] == "critical"].groupby("patient_id").size()
        )
        f["trigger_acceptance_rate_90d"] = (
            (seen["acceptance_status"] == "accepted").groupby(seen["patient_id"]).mean()
        )
        f["trigger_confidence_90d"] = g90["confidence_score"].mean()
        f[EVENT_TIMESTAMP] = t
        frames.append(f.reset_index())
    return _stamp(frames, "trigger_features", created)


def market_features(metrics, snapshots, created) -> pd.DataFrame:
    frames = []
    for t in snapshots:
        window = metrics[(metrics["metric_date"] <= t) & (metrics["metric_date"] > t - 30 * DAY)]
        if window.empty:
            continue
        g = window.groupby(["brand", "region"])
        f = pd.DataFrame({"achievement_rate_30d": g["achievement_rate"].mean()})
        share = window[window["metric_type"] == "market_share"].groupby(["brand", "region"])
        sales = window[window["metric_type"] == "sales"].groupby(["brand", "region"])
        f["market_share_30d"] = share["value"].mean()
        f["net_sales_30d"] = sales["value"].sum()
        f[EVENT_TIMESTAMP] = t
        frames.append(f.reset_index())
    return _stamp(frames, "market_features", created)


def snapshot_plan(tables: dict[str, pd.DataFrame], weeks: int) -> tuple[pd.Timestamp, list]:
    t = as_of(tables)
    return t, snapshot_times(t, weeks)
