"""Offline -> online materialization with explicit windows that never go backwards.

For each view and window [start, end] we take, from the offline Parquet, the
latest row per entity with start <= event_timestamp <= end, read the event time
already stored online for those entities, and write only rows that are newer.
Feast's SQLite store would overwrite a newer value with an older one when an old
window is materialized again; this guard keeps both stores monotonic. The window
is then recorded in the Feast registry, so `most_recent_end_time` (the registry
coverage clock) and the Feast CLI see it.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from datetime import datetime

import pandas as pd

from e2i_platform.features.specs import CREATED_TIMESTAMP, EVENT_TIMESTAMP, VIEWS

MODES = ("incremental", "full", "window")


@dataclass(frozen=True)
class Window:
    start: datetime  # tz-aware UTC
    end: datetime

    def as_dict(self) -> dict[str, str]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat()}


@dataclass(frozen=True)
class ViewMaterialization:
    view: str
    start: str
    end: str
    rows_in_window: int
    entities_in_window: int
    entities_written: int
    skipped_not_newer: int
    duration_s: float

    def as_dict(self) -> dict:
        return asdict(self)


def read_offline(offline_dir, view: str) -> pd.DataFrame:
    path = offline_dir / f"{view}.parquet"
    if not path.exists():
        raise FileNotFoundError(f"{view}: no offline data at {path}; materialize the asset first")
    return pd.read_parquet(path)


def latest_per_entity(df: pd.DataFrame, view: str) -> pd.DataFrame:
    keys = list(VIEWS[view].join_keys)
    ordered = df.sort_values([EVENT_TIMESTAMP, CREATED_TIMESTAMP])
    return ordered.groupby(keys, sort=False).tail(1).reset_index(drop=True)


def online_timestamps(store, view: str, entities: pd.DataFrame) -> pd.Series:
    """Event time stored online per entity row (NaT where missing), via Feast's read path.

    Redis reports a missing entity as present with timestamp 0: that is missing too.
    """
    spec = VIEWS[view]
    feature = spec.feature_names[0]
    rows = entities[list(spec.join_keys)].astype(str).to_dict("records")
    if not rows:
        return pd.Series([], dtype="datetime64[ns, UTC]")
    response = store.get_online_features(features=[f"{view}:{feature}"], entity_rows=rows)
    stamps = response.to_dict(include_event_timestamps=True)[f"{feature}__ts"]
    # Integer nanoseconds, not float seconds: a float conversion with NaN can trip a
    # process-wide numpy "raise" error state set by another library.
    out = pd.Series(pd.NaT, index=entities.index, dtype="datetime64[ns, UTC]")
    present = [i for i, ts in enumerate(stamps) if ts]  # Redis reports missing as 0
    if present:
        nanos = [int(round(float(stamps[i]) * 1e6)) * 1000 for i in present]
        out.iloc[present] = pd.to_datetime(nanos, unit="ns", utc=True)
    return out


def materialize_view(
    store, offline_dir, view: str, window: Window, redis_client=None
) -> ViewMaterialization:
    """Materialize one view's window; with `redis_client` (Redis online store) through the
    column-wise writer, else through Feast's write path."""
    started = time.perf_counter()
    spec = VIEWS[view]
    df = read_offline(offline_dir, view)
    ts = df[EVENT_TIMESTAMP]
    in_window = df[(ts >= pd.Timestamp(window.start)) & (ts <= pd.Timestamp(window.end))]
    latest = latest_per_entity(in_window, view)
    if redis_client is not None:
        from e2i_platform.features.online import require_key_version
        from e2i_platform.features.redis_writer import write_newer

        require_key_version(store.config)
        written, kept = write_newer(redis_client, store.project, view, latest)
    else:
        stored = online_timestamps(store, view, latest)
        newer = stored.isna() | (latest[EVENT_TIMESTAMP] > stored)
        to_write = latest[newer]
        if len(to_write):
            store.write_to_online_store(view, to_write[list(spec.columns)])
        written, kept = len(to_write), int((~newer).sum())
    feature_view = store.get_feature_view(view)
    store.registry.apply_materialization(
        feature_view, store.project, window.start, window.end, commit=True
    )
    return ViewMaterialization(
        view=view,
        start=window.start.isoformat(),
        end=window.end.isoformat(),
        rows_in_window=len(in_window),
        entities_in_window=len(latest),
        entities_written=written,
        skipped_not_newer=kept,
        duration_s=round(time.perf_counter() - started, 3),
    )
