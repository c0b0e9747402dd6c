"""Feature freshness on its three clocks, against a real Feast store (SQLite online store,
DuckDB offline store) holding one small view with event times the tests choose.

The store holds `patient_features` only: 20 patients at the older snapshot, 19 of them
again at the newest one, materialized up to half an hour after the newest snapshot.
`trigger_features` is applied but never materialized; `hcp_features` is not applied.
Each test measures the store at a moment of its choosing (`now`), so the fresh /
warning / stale boundaries are met exactly.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from e2i_platform.features.freshness import (
    RANK,
    ViewFreshness,
    _hours,
    _status,
    fresh_until,
    newest_snapshot,
    overall,
    sample_entities,
    view_freshness,
)
from e2i_platform.features.specs import CREATED_TIMESTAMP, EVENT_TIMESTAMP, VIEWS

VIEW = "patient_features"
NEWEST = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)  # the newest snapshot's event time
OLDER = NEWEST - timedelta(days=7)
COVERAGE_END = NEWEST + timedelta(minutes=30)  # the materialized window's end
ONLINE_NEWEST = [f"PAT{i:08d}" for i in range(19)]  # in the newest snapshot
ONLY_OLDER = "PAT00000019"  # online with the older snapshot's event time
UNKNOWN = ["PAT99999998", "PAT99999999"]  # in no table, so nowhere online
WARNING, MAX_AGE = 1.0, 2.0
SECOND = timedelta(seconds=1)


def _rows(patients: list[str], at: datetime) -> pd.DataFrame:
    """Rows of the view's offline table (every column, typed as the view declares)."""
    spec = VIEWS[VIEW]
    n = len(patients)
    values = {"float": [1.5] * n, "int": list(range(n)), "str": ["commercial"] * n}
    frame = pd.DataFrame({"patient_id": patients})
    frame[EVENT_TIMESTAMP] = pd.Timestamp(at)
    frame[CREATED_TIMESTAMP] = pd.Timestamp(at)
    for feature in spec.features:
        frame[feature.name] = values[feature.dtype]
    frame[EVENT_TIMESTAMP] = frame[EVENT_TIMESTAMP].astype("datetime64[ns, UTC]")
    frame[CREATED_TIMESTAMP] = frame[CREATED_TIMESTAMP].astype("datetime64[ns, UTC]")
    return frame[list(spec.columns)]


def _keys(directory: Path, view: str, key: str, ids: list[str], at: datetime) -> Path:
    """An offline table with only keys and event time: all that freshness reads."""
    directory.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame({key: ids, EVENT_TIMESTAMP: pd.Timestamp(at)})
    frame[EVENT_TIMESTAMP] = frame[EVENT_TIMESTAMP].astype("datetime64[ns, UTC]")
    frame.to_parquet(directory / f"{view}.parquet", index=False)
    return directory


@pytest.fixture(scope="module")
def feast_home(tmp_path_factory) -> Path:
    from e2i_platform.features.materialize import Window, materialize_view
    from e2i_platform.features.repo_objects import build_objects
    from e2i_platform.resources.feast import FeastResource

    home = tmp_path_factory.mktemp("feast_home")
    offline = home / "warehouse"
    offline.mkdir()
    table = pd.concat(
        [_rows([*ONLINE_NEWEST, ONLY_OLDER], OLDER), _rows(ONLINE_NEWEST, NEWEST)],
        ignore_index=True,
    )
    table.to_parquet(offline / f"{VIEW}.parquet", index=False)
    feast = FeastResource(home=str(home), project="freshness_test", online_store="sqlite")
    store = feast.store()
    applied = {"patient", VIEW, "trigger_features"}
    store.apply([o for o in build_objects(offline) if o.name in applied])
    materialize_view(store, VIEW, Window(OLDER, COVERAGE_END))
    return home


@pytest.fixture(scope="module")
def store(feast_home):
    from e2i_platform.resources.feast import FeastResource

    feast = FeastResource(home=str(feast_home), project="freshness_test", online_store="sqlite")
    return feast.store()


def _measure(store, offline_dir, hours_after_newest: float, view: str = VIEW, **kw):
    now = NEWEST + timedelta(hours=hours_after_newest)
    limits = {"max_age_hours": MAX_AGE, "warning_hours": WARNING, "sample_size": 200, **kw}
    return view_freshness(store, offline_dir, view, now, **limits)


# ---------------------------------------------------------------- pure rules


def test_status_bands_include_their_upper_limit():
    assert _status(0.0, WARNING, MAX_AGE) == "fresh"
    assert _status(1.0, WARNING, MAX_AGE) == "fresh"  # at the warning limit: still fresh
    assert _status(1.0001, WARNING, MAX_AGE) == "warning"
    assert _status(2.0, WARNING, MAX_AGE) == "warning"  # at the max age: not yet stale
    assert _status(2.0001, WARNING, MAX_AGE) == "stale"


def test_hours_are_rounded_to_four_decimals():
    assert _hours(pd.Timedelta(minutes=90)) == 1.5
    assert _hours(pd.Timedelta(seconds=1)) == 0.0003  # 1/3600 = 0.000277...
    assert _hours(pd.Timedelta(hours=-2)) == -2.0


def _view(status: str, **kw) -> ViewFreshness:
    base = {"view": f"v_{status}", "status": status, "reason": "r", "max_age_hours": 2.0}
    return ViewFreshness(**{**base, "warning_hours": 1.0, **kw})


@pytest.mark.parametrize(
    ("statuses", "worst"),
    [
        (["fresh"], "fresh"),
        (["fresh", "warning"], "warning"),
        (["warning", "fresh"], "warning"),
        (["warning", "stale"], "stale"),
        (["stale", "warning"], "stale"),
        (["stale", "unknown"], "unknown"),
        (["unknown", "stale"], "unknown"),
        (["fresh", "unknown", "warning"], "unknown"),
    ],
)
def test_overall_is_the_worst_view(statuses, worst):
    assert overall([_view(s) for s in statuses]) == worst


def test_overall_of_nothing_is_unknown_and_ranks_are_ordered():
    assert overall([]) == "unknown"
    assert sorted(RANK, key=RANK.__getitem__) == ["fresh", "warning", "stale", "unknown"]


def test_fresh_until_is_when_the_first_view_turns_stale():
    now = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    serving_oldest = _view("fresh", coverage_age_hours=0.25, serving_max_age_hours=1.5)
    coverage_oldest = _view(
        "warning", max_age_hours=36.0, coverage_age_hours=30.0, serving_max_age_hours=None
    )
    # 2 h - 1.5 h (the older clock, serving) = 30 min; 36 h - 30 h = 6 h.
    assert (
        fresh_until([coverage_oldest, serving_oldest], now)
        == (now + timedelta(minutes=30)).timestamp()
    )
    assert fresh_until([coverage_oldest], now) == (now + timedelta(hours=6)).timestamp()
    stale = _view("stale", coverage_age_hours=1.0, serving_max_age_hours=3.0)
    assert fresh_until([stale], now) == (now - timedelta(hours=1)).timestamp()  # passed


def test_fresh_until_is_none_when_a_view_is_unknown_or_there_is_none():
    now = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    known = _view("fresh", coverage_age_hours=0.1, serving_max_age_hours=0.2)
    assert fresh_until([known, _view("unknown")], now) is None
    assert fresh_until([_view("unknown"), known], now) is None
    assert fresh_until([], now) is None


def test_view_freshness_as_dict_has_every_clock():
    found = _view("fresh", coverage_end="c", sampled=3, missing=1).as_dict()
    assert found["view"] == "v_fresh" and found["coverage_end"] == "c"
    assert (found["sampled"], found["missing"], found["source_newest"]) == (3, 1, None)


# ---------------------------------------------------------------- the offline snapshot


def test_newest_snapshot_reads_only_the_newest_rows(feast_home):
    newest = newest_snapshot(feast_home / "warehouse" / f"{VIEW}.parquet", VIEW)
    assert list(newest.columns) == ["patient_id", EVENT_TIMESTAMP]
    assert sorted(newest["patient_id"]) == ONLINE_NEWEST
    assert set(newest[EVENT_TIMESTAMP]) == {pd.Timestamp(NEWEST)}


def test_newest_snapshot_of_an_empty_table_is_empty_with_the_columns(tmp_path):
    path = tmp_path / f"{VIEW}.parquet"
    _rows([], NEWEST).to_parquet(path, index=False)
    newest = newest_snapshot(path, VIEW)
    assert newest.empty and list(newest.columns) == ["patient_id", EVENT_TIMESTAMP]


def test_sample_is_every_entity_sorted_when_there_are_few():
    newest = pd.DataFrame(
        {"patient_id": ["PAT3", "PAT1", "PAT2", "PAT1"], EVENT_TIMESTAMP: pd.Timestamp(NEWEST)}
    )
    for size in (3, 10):  # exactly as many as asked for, or fewer: no sampling
        sample = sample_entities(newest, VIEW, size)
        assert sample["patient_id"].tolist() == ["PAT1", "PAT2", "PAT3"]
        assert sample.index.tolist() == [0, 1, 2]
        assert list(sample.columns) == ["patient_id"]


def test_sample_of_many_entities_is_bounded_and_deterministic():
    ids = [f"PAT{i:08d}" for i in range(50)]
    newest = pd.DataFrame({"patient_id": ids, EVENT_TIMESTAMP: pd.Timestamp(NEWEST)})
    first = sample_entities(newest, VIEW, 7)
    assert len(first) == 7 and first.index.tolist() == list(range(7))
    assert set(first["patient_id"]) <= set(ids)
    assert first["patient_id"].is_unique
    pd.testing.assert_frame_equal(first, sample_entities(newest.iloc[::-1], VIEW, 7))


# ---------------------------------------------------------------- the three clocks


@pytest.mark.parametrize(
    ("hours", "status"),
    [
        (0.5, "fresh"),
        (WARNING, "fresh"),
        (WARNING + 1 / 3600, "warning"),
        (MAX_AGE, "warning"),
        (MAX_AGE + 1 / 3600, "stale"),
    ],
)
def test_status_follows_the_oldest_clock_at_each_boundary(store, feast_home, hours, status):
    found = _measure(store, feast_home / "warehouse", hours)
    assert found.status == status, found.reason
    worst = round(hours, 4)
    assert found.serving_max_age_hours == found.serving_p50_age_hours == worst
    assert found.reason == (
        f"oldest clock {worst:.2f} h (warning > {WARNING} h, stale > {MAX_AGE} h)"
    )


def test_every_clock_is_reported(store, feast_home):
    now = NEWEST + timedelta(hours=1, seconds=1)
    found = view_freshness(store, feast_home / "warehouse", VIEW, now, MAX_AGE, WARNING, 200)
    assert (found.view, found.status) == (VIEW, "warning")
    assert (found.max_age_hours, found.warning_hours) == (MAX_AGE, WARNING)
    assert found.coverage_end == COVERAGE_END.isoformat()
    assert found.coverage_age_hours == 0.5003  # 30 min 1 s, rounded to 4 decimals
    assert found.source_newest == NEWEST.isoformat()
    assert found.source_age_hours == 1.0003
    assert found.serving_p50_age_hours == found.serving_max_age_hours == 1.0003
    assert (found.sampled, found.missing) == (19, 0)


def test_the_sample_is_bounded_by_sample_size(store, feast_home):
    found = _measure(store, feast_home / "warehouse", 0.5, sample_size=5)
    assert (found.status, found.sampled, found.missing) == ("fresh", 5, 0)


def test_an_old_value_served_online_makes_the_view_stale(store, tmp_path):
    # The newest snapshot lists a patient whose online value is a week old.
    offline = _keys(tmp_path, VIEW, "patient_id", [*ONLINE_NEWEST, ONLY_OLDER], NEWEST)
    found = _measure(store, offline, 0.5)
    assert found.status == "stale"
    assert found.serving_p50_age_hours == 0.5
    assert found.serving_max_age_hours == 168.5
    assert found.coverage_age_hours == 0.0  # the window ended half an hour after NEWEST
    assert (found.sampled, found.missing) == (20, 0)


def test_missing_entities_within_the_tolerated_share_warn(store, tmp_path):
    offline = _keys(tmp_path, VIEW, "patient_id", [*ONLINE_NEWEST, UNKNOWN[0]], NEWEST)
    found = _measure(store, offline, 0.5, max_missing_share=0.05)  # 1 of 20: exactly 5%
    assert found.status == "warning"
    assert found.reason == "1 of 20 sampled entities missing online (within the 5.0% tolerated)"
    assert (found.sampled, found.missing) == (20, 1)
    assert found.serving_max_age_hours == 0.5  # measured on the entities found


def test_missing_entities_above_the_tolerated_share_are_stale(store, tmp_path):
    offline = _keys(tmp_path, VIEW, "patient_id", [*ONLINE_NEWEST, UNKNOWN[0]], NEWEST)
    found = _measure(store, offline, 0.5, max_missing_share=0.04)
    assert found.status == "stale"
    assert found.reason == "1 of 20 sampled entities missing online (5.0% > 4.0% tolerated)"
    # No share is tolerated unless one is given.
    default = _measure(store, offline, 0.5)
    assert default.status == "stale"
    assert default.reason == "1 of 20 sampled entities missing online (5.0% > 0.0% tolerated)"


def test_tolerated_missing_entities_leave_an_older_status_as_it_is(store, tmp_path):
    offline = _keys(tmp_path, VIEW, "patient_id", [*ONLINE_NEWEST, UNKNOWN[0]], NEWEST)
    for hours, status in ((1.5, "warning"), (2.5, "stale")):
        found = _measure(store, offline, hours, max_missing_share=0.05)
        assert found.status == status
        assert found.reason.startswith(f"oldest clock {hours:.2f} h"), found.reason


def test_no_sampled_entity_online_is_unknown(store, tmp_path):
    offline = _keys(tmp_path, VIEW, "patient_id", UNKNOWN, NEWEST)
    found = _measure(store, offline, 0.5, max_missing_share=1.0)
    assert found.status == "unknown"
    assert found.reason == "no sampled entity is in the online store"
    assert (found.sampled, found.missing) == (2, 2)
    assert found.serving_max_age_hours is None and found.serving_p50_age_hours is None
    assert found.coverage_age_hours == 0.0 and found.source_age_hours == 0.5


def test_no_offline_data_is_unknown(store, tmp_path):
    missing = _measure(store, tmp_path / "nowhere", 0.5)
    assert missing.status == "unknown"
    assert missing.reason == f"no offline data at {tmp_path / 'nowhere' / f'{VIEW}.parquet'}"
    assert missing.source_newest is None and missing.source_age_hours is None
    assert missing.coverage_end == COVERAGE_END.isoformat()  # the registry was read
    (tmp_path / "empty").mkdir()
    _rows([], NEWEST).to_parquet(tmp_path / "empty" / f"{VIEW}.parquet", index=False)
    empty = _measure(store, tmp_path / "empty", 0.5)
    assert empty.status == "unknown" and empty.reason.startswith("no offline data at ")
    assert empty.source_newest is None and empty.sampled == 0


def test_a_view_never_materialized_is_unknown(store, tmp_path):
    offline = _keys(tmp_path, "trigger_features", "patient_id", ONLINE_NEWEST, NEWEST)
    found = _measure(store, offline, 0.5, view="trigger_features")
    assert (found.status, found.reason) == ("unknown", "never materialized")
    assert found.source_newest == NEWEST.isoformat()  # the source clock is still reported
    assert found.coverage_end is None and found.sampled == 0


def test_a_view_missing_from_the_registry_is_unknown(store, tmp_path):
    offline = _keys(tmp_path, "hcp_features", "hcp_id", ["HCP00000001"], NEWEST)
    found = _measure(store, offline, 2.0, view="hcp_features")
    assert found.status == "unknown"
    assert found.reason.startswith("registry: FeatureViewNotFoundException: ")
    assert "hcp_features" in found.reason
    assert found.source_age_hours == 2.0 and found.coverage_end is None


def test_an_unreadable_online_store_is_unknown(feast_home, tmp_path):
    from e2i_platform.resources.feast import FeastResource

    # The same registry, but the SQLite online store path is a directory.
    home = tmp_path / "home"
    (home / "feast" / "online_store.db").mkdir(parents=True)
    shutil.copy(feast_home / "feast" / "registry.db", home / "feast" / "registry.db")
    feast = FeastResource(home=str(home), project="freshness_test", online_store="sqlite")
    found = _measure(feast.store(), feast_home / "warehouse", 0.5)
    assert found.status == "unknown"
    assert found.reason.startswith("online store: OperationalError: "), found.reason
    assert (found.sampled, found.missing) == (19, 0)
    assert found.coverage_end == COVERAGE_END.isoformat()
    assert found.serving_max_age_hours is None
