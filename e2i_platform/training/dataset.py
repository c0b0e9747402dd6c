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

from e2i_platform.features.specs import EVENT_TIMESTAMP, FEATURE_SERVICE, SNAPSHOT_EPOCH

LABEL = "label"
CUTOFF = EVENT_TIMESTAMP
SPLIT = "split"
ENTITY_COLUMNS = ("patient_id", "hcp_id", "brand", "region")
# The training set's own columns (the entities and features are described by the specs).
COLUMN_DESCRIPTIONS = {
    CUTOFF: "Cutoff (UTC): features as known then, the outcome window starts after it",
    LABEL: "1 when the patient discontinued within the outcome window after the cutoff",
    SPLIT: "Chronological split: train, validation or test (one per patient)",
}


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
    """Entity rows with labels: one per (patient, cutoff) in the population. A patient's
    active journey at a cutoff is the latest started by then; of journeys starting at the
    same time, the one listed last (as in the feature tables)."""
    from e2i_platform.features.compute import as_of

    now = as_of({"patient_journeys": journeys, "treatment_events": events})
    stops = events[events["discontinuation_flag"]].groupby("patient_id")["event_date"].min()
    window = pd.Timedelta(days=spec.outcome_window_days)
    # Sorted once by start (stable): the journeys started by a cutoff are a prefix.
    by_start = pd.DataFrame(
        {
            "patient_id": journeys["patient_id"].astype(str).to_numpy(),
            "hcp_id": journeys["hcp_id"].astype(str).to_numpy(),
            "brand": journeys["brand"].astype(str).to_numpy(),
            "region": journeys["geographic_region"].astype(str).to_numpy(),
            "start": journeys["journey_start_date"].to_numpy(),
        }
    ).sort_values("start", kind="stable", ignore_index=True)
    stop_of = by_start["patient_id"].map(stops)
    rows = []
    for c in cutoffs(now, journeys["journey_start_date"].min(), spec):
        started = int(by_start["start"].searchsorted(c, side="right"))
        active = by_start.iloc[:started].drop_duplicates("patient_id", keep="last")
        stop = stop_of[active.index]
        at_risk = (stop.isna() | (stop > c)).to_numpy()  # discontinued already: not at risk
        active, stop = active[at_risk], stop[at_risk]
        rows.append(
            active[list(ENTITY_COLUMNS)].assign(
                **{CUTOFF: c, LABEL: ((stop > c) & (stop <= c + window)).astype("int64")}
            )
        )
    out = (
        pd.concat(rows, ignore_index=True)
        if rows
        else pd.DataFrame(columns=[*ENTITY_COLUMNS, CUTOFF, LABEL])
    )
    out[CUTOFF] = pd.to_datetime(out[CUTOFF]).dt.tz_localize("UTC")
    return out


def join_features(store, entity_rows: pd.DataFrame, spill_dir=None) -> tuple[pd.DataFrame, dict]:
    """Point-in-time join of the feature service onto every entity row, in one query.

    DuckDB ASOF joins on the views' offline Parquet, with the views' definitions from the
    Feast registry (`features.offline.point_in_time_join`): a row with no point-in-time
    match in a view keeps its other features, with nulls (and a count) for the missing
    view. A join that returned a different number of rows is refused rather than used."""
    from e2i_platform.features.offline import point_in_time_join

    service = store.get_feature_service(FEATURE_SERVICE)
    rows = entity_rows.reset_index(drop=True)
    joined = point_in_time_join(store, service, rows, spill_dir)
    if len(joined) != len(rows):
        raise ValueError(
            f"training_dataset: the point-in-time join returned {len(joined)} rows for "
            f"{len(rows)} entity rows; refusing a join that lost or duplicated rows"
        )
    joined = training_frame(joined, list(rows.columns))
    stats: dict = {"entity_rows": len(rows), "rows_without_match": {}}
    for projection in service.feature_view_projections:
        first = f"{projection.name}__{projection.features[0].name}"
        stats["rows_without_match"][projection.name] = int(joined[first].isna().sum())
    features = [c for c in joined.columns if "__" in c]
    stats["rows_with_any_null_feature"] = int(joined[features].isna().any(axis=1).sum())
    return joined, stats


def training_frame(joined: pd.DataFrame, entity_columns: list[str]) -> pd.DataFrame:
    """A point-in-time join's result as the training set stores it: the entity columns,
    then the features (`<view>__<feature>`; text as pandas strings), cutoffs in ns UTC,
    sorted by cutoff and patient."""
    joined[CUTOFF] = pd.to_datetime(joined[CUTOFF], utc=True).astype("datetime64[ns, UTC]")
    features = [c for c in joined.columns if "__" in c]
    for column in features:
        if not pd.api.types.is_numeric_dtype(joined[column]):
            joined[column] = joined[column].astype("string")
    ordered = joined[[*entity_columns, *features]]
    return ordered.sort_values([CUTOFF, "patient_id"], ignore_index=True)


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
