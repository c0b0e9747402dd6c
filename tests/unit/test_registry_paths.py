"""A Feast registry that came with a copy of its home (a real store: SQLite online,
DuckDB offline): before the repository is applied again, readers take the copy's offline
files and the recorded online tables are re-pointed at the copy's database, so nothing
reads or drops the original's. A source outside any home's layout is refused by name."""

from __future__ import annotations

import hashlib
import re
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from e2i_platform.features.specs import CREATED_TIMESTAMP, EVENT_TIMESTAMP, VIEWS

VIEW = "patient_features"
AT = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _table(patients: int) -> pd.DataFrame:
    spec = VIEWS[VIEW]
    values = {"float": [1.5] * patients, "int": list(range(patients)), "str": ["x"] * patients}
    frame = pd.DataFrame({"patient_id": [f"PAT{i:08d}" for i in range(patients)]})
    for column in (EVENT_TIMESTAMP, CREATED_TIMESTAMP):
        frame[column] = pd.Series([pd.Timestamp(AT)] * patients, dtype="datetime64[ns, UTC]")
    for feature in spec.features:
        frame[feature.name] = values[feature.dtype]
    return frame[list(spec.columns)]


def _store(home: Path):
    from e2i_platform.resources.feast import FeastResource

    return FeastResource(home=str(home), project="relocation_test", online_store="sqlite").store()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def copied(tmp_path) -> tuple[Path, Path]:
    """A home with `patient_features` applied (5 patients offline) and its online tables
    recorded as `feast apply` records them; and a copy of it at another path whose
    offline table then changed (3 patients), to tell which one a reader read."""
    from e2i_platform.features.repo_objects import build_objects

    original = tmp_path / "original"
    (original / "warehouse").mkdir(parents=True)
    _table(5).to_parquet(original / "warehouse" / f"{VIEW}.parquet", index=False)
    store = _store(original)
    store.apply([o for o in build_objects(original / "warehouse") if o.name in {"patient", VIEW}])
    store.registry.update_infra(
        store.provider.plan_infra(store.config, store.registry.proto()),
        store.project,
        commit=True,
    )
    copy = tmp_path / "restored" / "e2i"
    shutil.copytree(original, copy)
    _table(3).to_parquet(copy / "warehouse" / f"{VIEW}.parquet", index=False)
    return original, copy


def test_readers_take_the_copys_offline_file_before_the_registry_is_applied_again(copied):
    from feast import FeatureService

    from e2i_platform.features.offline import latest_in_window, point_in_time_join
    from e2i_platform.features.registry_paths import offline_source

    original, copy = copied
    store = _store(copy)
    assert store.get_feature_view(VIEW).batch_source.path.startswith(str(original))
    assert offline_source(store, VIEW).path == str(
        (copy / "warehouse" / f"{VIEW}.parquet").resolve()
    )
    latest, rows = latest_in_window(store, VIEW, AT - timedelta(days=1), AT + timedelta(days=1))
    assert (len(latest), rows) == (3, 3)
    service = FeatureService(name="s", features=[store.get_feature_view(VIEW)])
    entities = pd.DataFrame(
        {"patient_id": ["PAT00000000", "PAT00000004"], EVENT_TIMESTAMP: [AT, AT]}
    )
    joined = point_in_time_join(store, service, entities)
    column = f"{VIEW}__{VIEWS[VIEW].features[0].name}"
    assert joined[column].notna().tolist() == [True, False]  # the copy holds 3 patients


def test_the_recorded_online_tables_are_re_pointed_at_the_copy(copied):
    from e2i_platform.features.registry_paths import repoint_online_tables

    original, copy = copied
    registry, online = original / "feast" / "registry.db", original / "feast" / "online_store.db"
    before = (_digest(registry), _digest(online))
    store = _store(copy)
    moved = repoint_online_tables(store)
    assert [Path(p).resolve() for p in moved] == [online.resolve()]
    recorded = {
        Path(o.sqlite_table.path).resolve()
        for o in _store(copy).registry.proto().infra.infra_objects
        if o.HasField("sqlite_table")
    }
    assert recorded == {(copy / "feast" / "online_store.db").resolve()}
    assert repoint_online_tables(_store(copy)) == []  # nothing left to move
    assert (_digest(registry), _digest(online)) == before


def test_a_source_outside_any_homes_layout_is_refused_by_name(copied, tmp_path):
    from e2i_platform.features.registry_paths import offline_source
    from e2i_platform.features.repo_objects import build_objects

    _, copy = copied
    store = _store(copy)
    elsewhere = tmp_path / "elsewhere"
    store.apply([o for o in build_objects(elsewhere) if o.name in {"patient", VIEW}])
    with pytest.raises(ValueError, match=rf"{VIEW}: the Feast registry's offline source .*"):
        offline_source(store, VIEW)


STORE = "s3://e2i-bucket/prefix"


def test_with_an_object_store_the_expected_source_is_the_stores_table(tmp_path):
    """The registry names the object store's published table; a registry applied on a
    home (or another store) before is read from this store, never from there; a source
    outside the layout is refused by name. Nothing is read from the store to decide."""
    from e2i_platform.features.registry_paths import offline_source
    from e2i_platform.features.repo_objects import build_objects
    from e2i_platform.resources.feast import FeastResource

    home = tmp_path / "home"
    feast = FeastResource(
        home=str(home), project="store_paths_test", online_store="sqlite", store_url=STORE
    )
    assert str(feast.offline_dir) == f"{STORE}/warehouse"
    assert not str(feast.spill_dir).startswith(str(home))  # scratch: not under the home
    store = feast.store()
    expected = f"{STORE}/warehouse/{VIEW}.parquet"

    def applied(offline_dir) -> str:
        store.apply([o for o in build_objects(offline_dir) if o.name in {"patient", VIEW}])
        return store.get_feature_view(VIEW).batch_source.path

    assert applied(feast.offline_dir) == expected
    assert offline_source(store, VIEW).path == expected
    # Applied on a home before the warehouse moved, or on another store: this store's.
    for elsewhere in (home / "warehouse", "s3://another-bucket/other/warehouse"):
        assert applied(elsewhere) != expected
        assert offline_source(store, VIEW).path == expected
    # Outside any home's or store's layout: refused, naming both.
    for outside in (tmp_path / "elsewhere", "s3://another-bucket/elsewhere"):
        recorded = applied(outside)
        with pytest.raises(
            ValueError, match=rf"{VIEW}: .*{re.escape(recorded)}.* not .*{re.escape(expected)}"
        ):
            offline_source(store, VIEW)


def test_a_local_store_keeps_its_paths(tmp_path):
    from e2i_platform.features.offline import object_store_protocol
    from e2i_platform.features.repo_objects import source_path
    from e2i_platform.resources.feast import FeastResource

    feast = FeastResource(home=str(tmp_path), project="p", online_store="sqlite")
    assert feast.offline_dir == tmp_path / "warehouse"
    assert feast.spill_dir == tmp_path / "feast" / "duckdb_spill"
    assert source_path(feast.offline_dir, VIEW) == str(tmp_path / "warehouse" / f"{VIEW}.parquet")
    assert source_path(f"{STORE}/warehouse/", VIEW) == f"{STORE}/warehouse/{VIEW}.parquet"
    assert object_store_protocol(tmp_path) is None
    assert object_store_protocol(f"{STORE}/warehouse") == "s3"


def test_the_cli_repository_names_the_tables_the_asset_applies(e2i_home, monkeypatch):
    """feature_repo/repo.py's sources (`repo_offline_dir`): the home's warehouse, or with
    an object store the store's, as `feature_registry` applies them."""
    from e2i_platform.features.repo_objects import repo_offline_dir

    assert repo_offline_dir(e2i_home) == e2i_home.resolve() / "warehouse"
    monkeypatch.setenv("E2I_STORE_URL", STORE)
    assert str(repo_offline_dir(e2i_home)) == f"{STORE}/warehouse"
