"""Feature tables: one row per entity and snapshot, stamped with the snapshot time.

Snapshots are weekly up to the data's "as of" time (the newest event time in the
validated inputs), which is itself the last snapshot. A value stamped at time t
uses only rows whose own time is <= t, so point-in-time joins see exactly what
was known then. Generated data end at the run time, so the newest snapshot is
current; historical landing data give an old newest snapshot, and the freshness
gate says so.

Every table is computed in one pass over its inputs, not one pass per snapshot:
entities become integer codes (sorted like the ids, so rows come out in the
tables' order), and each input row is placed once, at the first snapshot that
knows it and at the first its window no longer covers. Counts and rates are then
cumulative sums over a snapshots x entities grid. Float sums and means are taken
by pandas over each (snapshot, entity) window's rows in input order, the way a
per-snapshot groupby adds them, so the values stay exactly the same.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from e2i_platform.contract import TABLES
from e2i_platform.features.specs import CREATED_TIMESTAMP, EVENT_TIMESTAMP, SNAPSHOT_EPOCH, VIEWS

DAY = pd.Timedelta(days=1)
EPOCH = pd.Timestamp("1970-01-01", tz="UTC")
NAT = np.iinfo(np.int64).min  # NaT as epoch nanoseconds
DTYPES = {"int": "int64", "float": "float64", "str": "string[pyarrow]"}


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


def _ns(times) -> np.ndarray:
    return np.asarray(times, dtype="datetime64[ns]").view("i8")


class _Grid:
    """Snapshots x entities, flattened snapshot-major: the order of the output rows."""

    def __init__(self, snapshots, n: int):
        self.snapshots = list(snapshots)
        self.times = _ns([pd.Timestamp(t).as_unit("ns").to_datetime64() for t in snapshots])
        if (np.diff(self.times) <= 0).any():
            raise ValueError("snapshots must be strictly increasing (see snapshot_times)")
        self.s, self.n = len(self.times), n

    def first(self, times, days: int = 0) -> np.ndarray:
        """Index of the first snapshot at or after each time (+ days); len(snapshots) if none."""
        return np.searchsorted(self.times, _ns(times) + days * DAY.value, side="left")

    def rows(self, first: np.ndarray) -> np.ndarray:
        """Flat cells of the entities present from snapshot `first` on."""
        cells = np.flatnonzero(np.arange(self.s)[:, None] >= first[None, :])
        return cells.astype(np.int32) if self.s * self.n < 2**31 else cells

    def total(self, ent, lo, hi, weights=None) -> np.ndarray:
        """Per cell: sum of `weights` (1 each) of the rows counted from snapshot lo to hi-1."""
        size = (self.s + 1) * self.n  # the extra snapshot holds "never" (lo or hi == s)
        grid = np.bincount(lo * self.n + ent, weights, size)
        if hi is not None:
            grid -= np.bincount(hi * self.n + ent, weights, size)
        return grid[: self.s * self.n].reshape(self.s, self.n).cumsum(axis=0).ravel()

    def agg(self, ent, lo, hi, values, how: str) -> np.ndarray:
        """Per cell: pandas' `how` ("sum", "mean") of the window's values, NaN if none.

        One (row, snapshot) pair per snapshot a row counts in, pairs in input order, so
        pandas adds each window's values in the order a per-snapshot groupby does.
        """
        reps = hi - lo
        item = np.repeat(np.arange(len(ent)), reps)
        offset = np.arange(len(item)) - np.repeat(np.cumsum(reps) - reps, reps)
        key = (lo[item] + offset) * self.n + ent[item]
        del offset
        res = pd.Series(np.asarray(values)[item]).groupby(key, sort=False).agg(how)
        out = np.full(self.s * self.n, np.nan)
        out[res.index.to_numpy()] = res.to_numpy()
        return out

    def frame(self, view: str, rows, keys: dict, features: dict, created) -> pd.DataFrame:
        """The view's table: its columns, in order and typed, for the given cells."""
        spec = VIEWS[view]
        snap = rows // self.n
        # Stamps in the snapshots' own unit (ns from snapshot_plan), as the per-snapshot
        # tables had them: the Parquet schema stays the same.
        stamps = pd.Series(np.array([pd.Timestamp(t).to_datetime64() for t in self.snapshots]))
        stamps = stamps.astype(stamps.dtype if len(rows) else "datetime64[ns]")
        stamps = stamps.dt.tz_localize("UTC")
        epoch = ((stamps - EPOCH) // pd.Timedelta(seconds=1)).to_numpy()
        cols = {**keys, EVENT_TIMESTAMP: stamps.array.take(snap), SNAPSHOT_EPOCH: epoch[snap]}
        for f in spec.features:
            if f.name != SNAPSHOT_EPOCH:
                # Popped: a count summed as float is not held twice while it is cast.
                value = features.pop(f.name)
                cols[f.name] = (
                    value if f.dtype == "str" else value.astype(DTYPES[f.dtype], copy=False)
                )
        # copy=False: the columns are already typed, so no block is built (or copied) twice.
        out = pd.DataFrame({c: cols[c] for c in spec.columns if c != CREATED_TIMESTAMP}, copy=False)
        # A broadcast scalar, so the column keeps `created`'s unit as it always had.
        out.insert(
            spec.columns.index(CREATED_TIMESTAMP),
            CREATED_TIMESTAMP,
            pd.Timestamp(created).tz_localize("UTC"),
        )
        return out


def _text(values, idx) -> pd.api.extensions.ExtensionArray:
    """values[idx] as string[pyarrow], converted once per distinct value."""
    codes, uniques = pd.factorize(np.asarray(values, dtype=object))
    codes = codes[idx]
    return pd.array(uniques, dtype=DTYPES["str"]).take(codes, allow_fill=bool((codes < 0).any()))


def _known(ids: pd.Index, frame: pd.DataFrame, key: str):
    """Codes of frame[key] in ids, and which rows have one (the others belong to no row)."""
    code = ids.get_indexer(frame[key])
    return code[code >= 0], code >= 0


def _patients(journeys, snapshots):
    """Patient codes of the journeys, the grid, each journey's first snapshot, the rows."""
    ids, code = _ids(journeys["patient_id"])
    grid = _Grid(snapshots, len(ids))
    started = grid.first(journeys["journey_start_date"])
    first = np.full(len(ids), grid.s)
    np.minimum.at(first, code, started)
    return ids, code, grid, started, grid.rows(first)


def _ids(values) -> tuple[pd.Index, np.ndarray]:
    code, ids = pd.factorize(values, sort=True)
    return pd.Index(ids), code


def _rate(part, whole) -> np.ndarray:
    return np.divide(part, whole, out=np.full(len(whole), np.nan), where=whole > 0)


def _days_before(grid, rows, times) -> np.ndarray:
    """Days from each time (epoch ns; NAT for none) to its row's snapshot."""
    snapshot = grid.times[rows // grid.n].view("M8[ns]")
    return (snapshot - times.view("M8[ns]")) / DAY.to_timedelta64()


def _latest_journeys(journeys, code, started, grid, rows) -> np.ndarray:
    """Per row, the journey row of the patient's latest started journey; of journeys
    starting at the same time, the one listed last (a stable sort: the same answer on
    every machine, which numpy's default sort does not promise)."""
    start = _ns(journeys["journey_start_date"])
    order = np.lexsort((start, code))  # stable: ties keep their order in the table
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    best = np.full((grid.s + 1) * grid.n, -1)
    np.maximum.at(best, started * grid.n + code, rank)
    best = best[: grid.s * grid.n].reshape(grid.s, grid.n)
    return order[np.maximum.accumulate(best, axis=0).ravel()[rows]]


def patient_features(journeys, events, snapshots, created) -> pd.DataFrame:
    ids, code, grid, started, rows = _patients(journeys, snapshots)
    patient, keep = _known(ids, events, "patient_id")
    when = events["event_date"].to_numpy()[keep]
    lo, hi = grid.first(when), grid.first(when, days=90)
    cost = events["cost"].to_numpy()[keep]
    # The window sums first: their (row, snapshot) pairs are the largest transient.
    f = {"cost_90d": np.nan_to_num(grid.agg(patient, lo, hi, cost, "sum")[rows], nan=0.0)}
    adverse = events["adverse_event_flag"].to_numpy(dtype=bool)[keep]
    f["journeys_started"] = grid.total(code, started, None)[rows]
    f["events_total"] = grid.total(patient, lo, None)[rows]
    f["events_90d"] = grid.total(patient, lo, hi)[rows]
    f["adverse_events_90d"] = grid.total(patient, lo, hi, adverse)[rows]
    f["adverse_event_rate"] = _rate(grid.total(patient, lo, None, adverse)[rows], f["events_total"])
    last = np.full((grid.s + 1) * grid.n, NAT)
    np.maximum.at(last, lo * grid.n + patient, _ns(when))
    last = last[: grid.s * grid.n].reshape(grid.s, grid.n)
    f["days_since_last_event"] = _days_before(
        grid, rows, np.maximum.accumulate(last, axis=0).ravel()[rows]
    )
    first_start = np.full(grid.n, np.iinfo(np.int64).max)
    np.minimum.at(first_start, code, _ns(journeys["journey_start_date"]))
    f["days_on_therapy"] = _days_before(grid, rows, first_start[rows % grid.n])
    latest = _latest_journeys(journeys, code, started, grid, rows)
    for col in ("engagement_score", "disease_severity"):
        f[col] = journeys[col].to_numpy(dtype="float64")[latest]
    for col in ("insurance_type", "age_group"):
        f[col] = _text(journeys[col], latest)
    keys = {"patient_id": _text(ids, rows % grid.n)}
    return grid.frame("patient_features", rows, keys, f, created)


def hcp_features(hcps, journeys, events, snapshots, created) -> pd.DataFrame:
    ids, code = _ids(hcps["hcp_id"])
    grid = _Grid(snapshots, len(ids))
    known = np.full(grid.n, grid.s)
    known[code] = grid.first(hcps["updated_at"])
    rows = grid.rows(known)
    profile = np.argsort(code)[rows % grid.n]  # hcp_id is unique: codes are a permutation
    # The profile features are the view's features that hcp_profiles holds.
    f = {c: hcps[c].to_numpy()[profile] for c in VIEWS["hcp_features"].feature_names if c in hcps}
    # A patient counts for an HCP from the first snapshot after their first journey together.
    hcp, keep = _known(ids, journeys, "hcp_id")
    started = pd.Series(grid.first(journeys["journey_start_date"].to_numpy()[keep]))
    first = started.groupby([hcp, pd.factorize(journeys["patient_id"])[0][keep]]).min()
    hcp = first.index.get_level_values(0).to_numpy()
    f["patients_treated"] = grid.total(hcp, first.to_numpy(), None)[rows]
    hcp, keep = _known(ids, events, "hcp_id")
    when = events["event_date"].to_numpy()[keep]
    lo, hi = grid.first(when), grid.first(when, days=180)
    adverse = events["adverse_event_flag"].to_numpy(dtype=bool)[keep]
    f["patient_adverse_rate_180d"] = _rate(
        grid.total(hcp, lo, hi, adverse)[rows], grid.total(hcp, lo, hi)[rows]
    )
    keys = {"hcp_id": _text(ids, rows % grid.n)}
    return grid.frame("hcp_features", rows, keys, f, created)


def trigger_features(triggers, journeys, snapshots, created) -> pd.DataFrame:
    """Every patient with a journey gets a row: no trigger is a fact (zero counts)."""
    ids, _, grid, _, rows = _patients(journeys, snapshots)
    patient, keep = _known(ids, triggers, "patient_id")
    at = triggers["trigger_timestamp"].to_numpy()[keep]
    lo, hi30, hi90 = grid.first(at), grid.first(at, days=30), grid.first(at, days=90)
    critical = (triggers["priority"] == "critical").to_numpy(dtype=bool)[keep]
    accepted = (triggers["acceptance_status"] == "accepted").to_numpy(dtype=bool)[keep]
    f = {
        "triggers_30d": grid.total(patient, lo, hi30)[rows],
        "critical_triggers_30d": grid.total(patient, lo, hi30, critical)[rows],
        "trigger_acceptance_rate_90d": _rate(
            grid.total(patient, lo, hi90, accepted)[rows], grid.total(patient, lo, hi90)[rows]
        ),
        "trigger_confidence_90d": grid.agg(
            patient, lo, hi90, triggers["confidence_score"].to_numpy()[keep], "mean"
        )[rows],
    }
    keys = {"patient_id": _text(ids, rows % grid.n)}
    return grid.frame("trigger_features", rows, keys, f, created)


def market_features(metrics, snapshots, created) -> pd.DataFrame:
    brands, brand = _ids(metrics["brand"])
    regions, region = _ids(metrics["region"])
    grid = _Grid(snapshots, len(brands) * len(regions))
    group = brand * len(regions) + region
    lo, hi = grid.first(metrics["metric_date"]), grid.first(metrics["metric_date"], days=30)
    rows = np.flatnonzero(grid.total(group, lo, hi) > 0)
    f = {"achievement_rate_30d": grid.agg(group, lo, hi, metrics["achievement_rate"], "mean")}
    for name, kind, how in (
        ("market_share_30d", "market_share", "mean"),
        ("net_sales_30d", "sales", "sum"),
    ):
        m = (metrics["metric_type"] == kind).to_numpy(dtype=bool)
        f[name] = grid.agg(group[m], lo[m], hi[m], metrics["value"].to_numpy()[m], how)
    f = {k: v[rows] for k, v in f.items()}
    cell = rows % grid.n
    keys = {
        "brand": _text(brands, cell // len(regions)),
        "region": _text(regions, cell % len(regions)),
    }
    return grid.frame("market_features", rows, keys, f, created)


def snapshot_plan(tables: dict[str, pd.DataFrame], weeks: int) -> tuple[pd.Timestamp, list]:
    t = as_of(tables)
    return t, snapshot_times(t, weeks)
