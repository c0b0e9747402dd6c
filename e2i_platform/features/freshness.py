"""Feature freshness measured on three clocks, per view.

- registry coverage: the end of the latest materialized window (registry refreshed);
- source freshness: the newest event time in the offline Parquet (under the home, or in
  the object store every machine reads: `FeastResource.offline_dir`);
- serving freshness: event times actually stored online, on a sample of entities
  from the newest offline snapshot (p50 and max age, missing count).

Status: fresh / warning / stale / unknown. A view that was never materialized, a
store that cannot be read, or a sample found nowhere online is *unknown*, which
is never reported as fresh.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime

import pandas as pd

from e2i_platform.features.materialize import online_timestamps
from e2i_platform.features.offline import as_location, read_offline_table
from e2i_platform.features.specs import EVENT_TIMESTAMP, VIEWS

HOUR = pd.Timedelta(hours=1)
# Worst last: a set of views is as fresh as its worst.
RANK = {s: i for i, s in enumerate(("fresh", "warning", "stale", "unknown"))}
# Reasons of an unknown view that say the store or the registry could not be read.
STORE_REASONS = ("online store:", "registry:", "feature store:")


@dataclass(frozen=True)
class ViewFreshness:
    view: str
    status: str
    reason: str
    max_age_hours: float
    warning_hours: float
    coverage_end: str | None = None
    coverage_age_hours: float | None = None
    source_newest: str | None = None
    source_age_hours: float | None = None
    serving_p50_age_hours: float | None = None
    serving_max_age_hours: float | None = None
    sampled: int = 0
    missing: int = 0

    @property
    def kind(self) -> str | None:
        """What a stale or unknown view needs (None when fresh or warning):

        - ``source``: the offline data themselves are older than the limit (or absent); a
          refresh of the online store cannot help, a new ingest can;
        - ``store``: the online store or the registry cannot be read; a refresh helps once
          it answers again (and fails until then);
        - ``serving``: the offline data are fresh but what is served is not (old window,
          values missing online, never materialized): a refresh helps.
        """
        if self.status not in ("stale", "unknown"):
            return None
        if self.source_age_hours is None or self.source_age_hours > self.max_age_hours:
            return "source"
        if self.reason.startswith(STORE_REASONS):
            return "store"
        return "serving"

    def as_dict(self) -> dict:
        return {**asdict(self), "kind": self.kind}


def _hours(delta: pd.Timedelta) -> float:
    return round(delta / HOUR, 4)


def _status(age_hours: float, warning: float, max_age: float) -> str:
    if age_hours > max_age:
        return "stale"
    if age_hours > warning:
        return "warning"
    return "fresh"


def newest_snapshot(path, view: str) -> pd.DataFrame:
    """Keys and event time of the newest offline snapshot only (a file on disk or in an
    object store).

    Reads the timestamp column first and then just the newest snapshot's rows, so the
    cost does not grow with the weeks of history kept offline."""
    times = read_offline_table(path, columns=[EVENT_TIMESTAMP])[EVENT_TIMESTAMP]
    if times.empty:
        return pd.DataFrame(columns=[*VIEWS[view].join_keys, EVENT_TIMESTAMP])
    return read_offline_table(
        path,
        columns=[*VIEWS[view].join_keys, EVENT_TIMESTAMP],
        filters=[(EVENT_TIMESTAMP, "==", times.max())],
    )


def sample_entities(newest: pd.DataFrame, view: str, size: int) -> pd.DataFrame:
    """A deterministic sample of `size` entities of the newest snapshot (`newest_snapshot`)."""
    keys = list(VIEWS[view].join_keys)
    entities = newest[keys].drop_duplicates().sort_values(keys)
    if len(entities) > size:
        entities = entities.sample(n=size, random_state=0)
    return entities.reset_index(drop=True)


def missing_online(store, offline_dir, view: str, sample_size: int) -> tuple[int, int]:
    """(sampled, missing): how many entities of a sample of the newest offline snapshot
    the online store does not hold. Raises when the store cannot be read."""
    path = as_location(offline_dir) / f"{view}.parquet"
    if not path.exists():
        return 0, 0
    sample = sample_entities(newest_snapshot(path, view), view, sample_size)
    if sample.empty:
        return 0, 0
    return len(sample), int(online_timestamps(store, view, sample).isna().sum())


def view_freshness(
    store,
    offline_dir,
    view: str,
    now: datetime,
    max_age_hours: float,
    warning_hours: float,
    sample_size: int,
    max_missing_share: float = 0.0,
    online_unreachable: str | None = None,
) -> ViewFreshness:
    now_ts = pd.Timestamp(now)
    limits = {"max_age_hours": max_age_hours, "warning_hours": warning_hours}
    measured: dict = {}

    path = as_location(offline_dir) / f"{view}.parquet"
    offline = newest_snapshot(path, view) if path.exists() else None
    if offline is not None and len(offline):
        newest = offline[EVENT_TIMESTAMP].max()
        measured.update(source_newest=newest.isoformat(), source_age_hours=_hours(now_ts - newest))

    try:
        feature_view = store.get_feature_view(view)
    except Exception as exc:  # not applied, or the registry cannot be read
        return ViewFreshness(
            view, "unknown", f"registry: {type(exc).__name__}: {exc}", **limits, **measured
        )
    coverage = feature_view.most_recent_end_time
    if coverage is None:
        return ViewFreshness(view, "unknown", "never materialized", **limits, **measured)
    coverage = pd.Timestamp(coverage)
    coverage = coverage.tz_localize("UTC") if coverage.tzinfo is None else coverage
    measured.update(coverage_end=coverage.isoformat(), coverage_age_hours=_hours(now_ts - coverage))
    if offline is None or not len(offline):
        return ViewFreshness(view, "unknown", f"no offline data at {path}", **limits, **measured)

    sample = sample_entities(offline, view, sample_size)
    why = online_unreachable  # probed once for all views (FeastResource)
    if why is None:
        try:
            stored = online_timestamps(store, view, sample)
        except Exception as exc:  # the online store cannot be read
            why = f"{type(exc).__name__}: {exc}"
    if why is not None:
        return ViewFreshness(
            view, "unknown", f"online store: {why}", **limits, **measured, sampled=len(sample)
        )
    present = stored.dropna()
    measured.update(sampled=len(sample), missing=int(stored.isna().sum()))
    if present.empty:
        return ViewFreshness(
            view, "unknown", "no sampled entity is in the online store", **limits, **measured
        )
    ages = (now_ts - present) / HOUR
    measured.update(
        serving_p50_age_hours=round(float(ages.median()), 4),
        serving_max_age_hours=round(float(ages.max()), 4),
    )

    worst = max(measured["serving_max_age_hours"], measured["coverage_age_hours"])
    status = _status(worst, warning_hours, max_age_hours)
    reason = f"oldest clock {worst:.2f} h (warning > {warning_hours} h, stale > {max_age_hours} h)"
    missing_share = measured["missing"] / len(sample)
    if missing_share > max_missing_share:
        # Serving would read nothing for these entities: as bad as stale values.
        status = "stale"
        reason = (
            f"{measured['missing']} of {len(sample)} sampled entities missing online "
            f"({missing_share:.1%} > {max_missing_share:.1%} tolerated)"
        )
    elif measured["missing"] and status == "fresh":
        status = "warning"
        reason = (
            f"{measured['missing']} of {len(sample)} sampled entities missing online "
            f"(within the {max_missing_share:.1%} tolerated)"
        )
    return ViewFreshness(view, status, reason, **limits, **measured)


def overall(results: list[ViewFreshness]) -> str:
    return max((r.status for r in results), key=RANK.__getitem__, default="unknown")


def fresh_until(results: list[ViewFreshness], now: datetime) -> float | None:
    """Epoch seconds at which the first view turns stale, if nothing is refreshed."""
    horizons = []
    for r in results:
        if r.status == "unknown":
            return None
        ages = [a for a in (r.coverage_age_hours, r.serving_max_age_hours) if a is not None]
        horizons.append(pd.Timestamp(now) + (r.max_age_hours - max(ages)) * HOUR)
    return min(horizons).timestamp() if horizons else None
