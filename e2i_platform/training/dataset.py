"""The discontinuation training set: labels at cutoffs, features point-in-time, splits.

At each cutoff c (every `cutoff_every_days`, leaving a full outcome window before
the data's as-of time) the population is every patient with a journey started
on or before c that has not already been discontinued by c. The label is 1 when
the patient's discontinuation event falls in (c, c + outcome_window_days]. Entity
rows carry the patient, the active journey's HCP, brand and region, and the
cutoff as event time; Feast joins the feature service point-in-time.

Splits are chronological by cutoff (train, then validation, then test), with a
gap of one outcome window between them so no training label window overlaps a
later split; each patient belongs to exactly one split (the split of their first
cutoff), and rows that would put a patient in a second split are dropped and
counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from e2i_platform.features.specs import EVENT_TIMESTAMP, FEATURE_SERVICE, SNAPSHOT_EPOCH, VIEWS

LABEL = "label"
CUTOFF = EVENT_TIMESTAMP
SPLIT = "split"
ENTITY_COLUMNS = ("patient_id", "hcp_id", "brand", "region")


@dataclass(frozen=True)
class DatasetSpec:
    cutoff_every_days: int
    outcome_window_days: int
    history_days: int
    validation_fraction: float
    test_fraction: float


def cutoffs(as_of: pd.Timestamp, earliest: pd.Timestamp, spec: DatasetSpec) -> list[pd.Timestamp]:
    last = (as_of - pd.Timedelta(days=spec.outcome_window_days)).normalize()
    first = max(earliest.normalize(), as_of.normalize() - pd.Timedelta(days=spec.history_days))
    out, t = [], last
    while t >= first:
        out.append(t)
        t -= pd.Timedelta(days=spec.cutoff_every_days)
    return sorted(out)


def label_rows(journeys: pd.DataFrame, events: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """Entity rows with labels: one per (patient, cutoff) in the population."""
    from e2i_platform.features.compute import as_of

    now = as_of({"patient_journeys": journeys, "treatment_events": events})
    stops = events[events["discontinuation_flag"]].groupby("patient_id")["event_date"].min()
    window = pd.Timedelta(days=spec.outcome_window_days)
    rows = []
    for c in cutoffs(now, journeys["journey_start_date"].min(), spec):
        started = journeys[journeys["journey_start_date"] <= c]
        active = started.sort_values("journey_start_date").groupby("patient_id").tail(1)
        stop = active["patient_id"].map(stops)
        active = active[stop.isna() | (stop > c)]  # already discontinued: not at risk
        stop = active["patient_id"].map(stops)
        rows.append(
            pd.DataFrame(
                {
                    "patient_id": active["patient_id"].astype(str).to_numpy(),
                    "hcp_id": active["hcp_id"].astype(str).to_numpy(),
                    "brand": active["brand"].astype(str).to_numpy(),
                    "region": active["geographic_region"].astype(str).to_numpy(),
                    CUTOFF: c,
                    LABEL: ((stop > c) & (stop <= c + window)).astype("int64").to_numpy(),
                }
            )
        )
    out = (
        pd.concat(rows, ignore_index=True)
        if rows
        else pd.DataFrame(columns=[*ENTITY_COLUMNS, CUTOFF, LABEL])
    )
    out[CUTOFF] = pd.to_datetime(out[CUTOFF]).dt.tz_localize("UTC")
    return out


def join_features(store, entity_rows: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Point-in-time join of every view of the feature service; no entity row is lost.

    Feast's file offline store drops an entity row that lacks a point-in-time match in
    any one view. Each view of the service is therefore joined on its own and merged
    back onto every entity row: a row missing one view keeps the others, with nulls
    (and a count) for the missing one."""
    service = store.get_feature_service(FEATURE_SERVICE)
    full = entity_rows.reset_index(drop=True)
    stats: dict = {"entity_rows": len(full), "rows_without_match": {}}
    for projection in service.feature_view_projections:
        view = projection.name
        # Many patients share an HCP (or a brand and region) at a cutoff: ask Feast once
        # per distinct key and time, then spread the answer over every row.
        keys = [*VIEWS[view].join_keys, CUTOFF]
        requests = full[keys].drop_duplicates()
        joined = store.get_historical_features(
            entity_df=requests,
            features=[f"{view}:{f.name}" for f in projection.features],
            full_feature_names=True,
        ).to_df()
        columns = [f"{view}__{f.name}" for f in projection.features]
        joined[CUTOFF] = pd.to_datetime(joined[CUTOFF], utc=True)
        full = full.merge(joined[[*keys, *columns]], on=keys, how="left", validate="many_to_one")
        stats["rows_without_match"][view] = int(full[columns[0]].isna().sum())
    features = [c for c in full.columns if "__" in c]
    stats["rows_with_any_null_feature"] = int(full[features].isna().any(axis=1).sum())
    return full.sort_values([CUTOFF, "patient_id"], ignore_index=True), stats


def chronological_split(df: pd.DataFrame, spec: DatasetSpec) -> tuple[pd.DataFrame, dict]:
    times = sorted(df[CUTOFF].unique())
    n = len(times)
    n_test = max(1, round(n * spec.test_fraction))
    n_val = max(1, round(n * spec.validation_fraction))
    if n < n_test + n_val + 1:
        raise ValueError(f"{n} cutoffs are too few for train/validation/test splits")
    val_start = times[n - n_test - n_val]
    test_start = times[n - n_test]
    gap = pd.Timedelta(days=spec.outcome_window_days)
    split = pd.Series("train", index=df.index)
    split[df[CUTOFF] >= val_start] = "validation"
    split[df[CUTOFF] >= test_start] = "test"
    # The gap: a label window that reaches into the next split's period is dropped.
    in_gap = ((split == "train") & (df[CUTOFF] > val_start - gap)) | (
        (split == "validation") & (df[CUTOFF] > test_start - gap)
    )
    out = df.assign(**{SPLIT: split})[~in_gap]
    first = out.sort_values(CUTOFF).groupby("patient_id")[SPLIT].first()
    own = out["patient_id"].map(first) == out[SPLIT]
    stats = {
        "rows_in_gap_dropped": int(in_gap.sum()),
        "rows_dropped_for_patient_isolation": int((~own).sum()),
        "validation_starts": pd.Timestamp(val_start).isoformat(),
        "test_starts": pd.Timestamp(test_start).isoformat(),
    }
    return out[own].reset_index(drop=True), stats


def feature_columns(df: pd.DataFrame) -> list[str]:
    """Model inputs: every joined feature except the provenance epochs."""
    return [c for c in df.columns if "__" in c and not c.endswith(f"__{SNAPSHOT_EPOCH}")]


def snapshot_columns(df: pd.DataFrame) -> list[str]:
    return [f"{v}__{SNAPSHOT_EPOCH}" for v in VIEWS if f"{v}__{SNAPSHOT_EPOCH}" in df.columns]
