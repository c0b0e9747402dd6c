"""Feast's offline data on an S3-compatible object store (a real moto server process):
the feature tables are published to `s3://<bucket>/prefix/warehouse/`, the Feast registry
(Feast's SQL registry, PostgreSQL) names them there, and every Feast read -- the online
store's materialization, the point-in-time join, Feast's own `get_historical_features`
and the freshness clocks -- reads them there, through DuckDB's fsspec filesystem. The
results equal what the same data give from a local store, and nothing of it is written
under the home (the online store is a private Redis, the registry is in PostgreSQL)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from s3_fixtures import ObjectStore

from e2i_platform.features.specs import EVENT_TIMESTAMP, FEATURE_SERVICE, VIEWS
from e2i_platform.settings import load_settings
from e2i_platform.training.dataset import CUTOFF, ENTITY_COLUMNS, training_frame

from support import (
    FEATURE_CHAIN,
    anchor_hours_ago,
    definitions,
    evaluations,
    failed_steps,
    latest_metadata,
    materialized,
)

pytest_plugins = ["s3_fixtures"]  # object_store, s3_endpoint

FEAST_STEPS = dg.AssetSelection.assets("feature_registry", "online_features")
FEATURE_TABLES = FEATURE_CHAIN - FEAST_STEPS  # the feature tables and what they read


@pytest.fixture(autouse=True)
def fresh_s3_clients():
    """fsspec keeps one S3 filesystem per constructor arguments, and `lib.store` makes its
    own without the endpoint: one made for another module's moto server (another port)
    would be reused. Each test starts without them."""
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    yield
    s3fs.S3FileSystem.clear_instance_cache()


def _files_under(root: Path) -> dict[str, int]:
    """Every file under `root` with its modification time (ns)."""
    return {
        str(Path(d, f).relative_to(root)): Path(d, f).stat().st_mtime_ns
        for d, _, fs in os.walk(root)
        for f in fs
    }


def _on_the_store(defs: dg.Definitions, settings) -> dict:
    """The definitions' resources with the store URL the root definitions pass from
    `settings.platform.store.url` (the IO managers and Feast)."""
    from e2i_platform.resources.feast import FeastResource
    from e2i_platform.resources.storage import RecordIOManager, WarehouseIOManager

    url, home = settings.platform.store.url, str(settings.home)
    config = defs.resources["e2i_config"]
    return {
        **defs.resources,
        "warehouse": WarehouseIOManager(home=home, e2i_config=config, store_url=url),
        "records": RecordIOManager(home=home, e2i_config=config, store_url=url),
        "feast": FeastResource(
            home=home,
            project=settings.platform.feature_store.project,
            online_store=settings.online_store,
            redis_url=dg.EnvVar("REDIS_URL"),
            **FeastResource.registry_fields(settings),
            store_url=url,
        ),
    }


def _feast(resources: dict):
    """The Feast resource with its EnvVar fields resolved, as in a run."""
    with dg.build_resources({"feast": resources["feast"]}) as built:
        return built.feast


def _published(object_store: ObjectStore, view: str) -> pd.DataFrame:
    """A view's published table, read with boto3 and pandas (not through the platform)."""
    return pd.read_parquet(io.BytesIO(object_store.get(f"prefix/warehouse/{view}.parquet")))


def _entity_rows(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Training-like entity rows at the newest snapshot and 10 days before it, plus rows
    no view matches (an unknown patient; a cutoff before any data)."""
    patients = tables["patient_features"]
    newest = patients[EVENT_TIMESTAMP].max()
    hcps = tables["hcp_features"]["hcp_id"].drop_duplicates().sort_values().tolist()
    markets = tables["market_features"][["brand", "region"]].drop_duplicates()
    markets = markets.sort_values(["brand", "region"]).to_numpy().tolist()
    ids = patients.loc[patients[EVENT_TIMESTAMP] == newest, "patient_id"]
    ids = ids.drop_duplicates().sort_values().head(40).tolist()
    rows = [
        {
            "patient_id": p,
            "hcp_id": hcps[i % len(hcps)],
            "brand": markets[i % len(markets)][0],
            "region": markets[i % len(markets)][1],
            CUTOFF: cutoff,
        }
        for i, p in enumerate(ids)
        for cutoff in (newest, newest - pd.Timedelta(days=10))
    ]
    rows.append({**rows[0], "patient_id": "PAT_UNKNOWN"})
    rows.append({**rows[1], CUTOFF: pd.Timestamp("2001-01-01", tz="UTC")})
    frame = pd.DataFrame(rows)
    frame[CUTOFF] = pd.to_datetime(frame[CUTOFF], utc=True).astype("datetime64[ns, UTC]")
    return frame[[*ENTITY_COLUMNS, CUTOFF]]


def _feast_join(store, entity_rows: pd.DataFrame, *locations) -> pd.DataFrame:
    """Feast's own get_historical_features (its DuckDB store), in the platform's shape."""
    from e2i_platform.features.offline import bound_feast_session

    bound_feast_session(*locations)
    joined = store.get_historical_features(
        entity_df=entity_rows.copy(),
        features=store.get_feature_service(FEATURE_SERVICE),
        full_feature_names=True,
    ).to_df()
    return training_frame(joined, list(entity_rows.columns))


def _local_join(tables: dict[str, pd.DataFrame], where: Path, entity_rows) -> pd.DataFrame:
    """The platform's join on a local store holding the same tables (outside the home)."""
    from e2i_platform.features.offline import point_in_time_join
    from e2i_platform.features.repo_objects import build_objects
    from e2i_platform.resources.feast import FeastResource

    (where / "warehouse").mkdir(parents=True)
    for view, table in tables.items():
        table.to_parquet(where / "warehouse" / f"{view}.parquet", index=False)
    local = FeastResource(home=str(where), project="e2i_local_copy", online_store="sqlite")
    store = local.store()
    store.apply(build_objects(local.offline_dir))
    service = store.get_feature_service(FEATURE_SERVICE)
    return training_frame(
        point_in_time_join(store, service, entity_rows.copy(), local.spill_dir),
        list(entity_rows.columns),
    )


def test_feast_reads_the_offline_tables_in_the_object_store_and_writes_nothing_home(
    object_store: ObjectStore, e2i_home: Path, instance, monkeypatch, private_redis, tmp_path
):
    from e2i_platform.features.checks import evaluate_freshness
    from e2i_platform.features.freshness import missing_online
    from e2i_platform.features.offline import earliest_event, point_in_time_join
    from e2i_platform.features.registry_paths import offline_source
    from e2i_platform.resources.feast import feast_registry_url

    monkeypatch.setenv("E2I_STORE_URL", object_store.url)
    monkeypatch.setenv("REDIS_URL", private_redis.url)
    monkeypatch.setenv("E2I_FEAST_REGISTRY", "sql")
    monkeypatch.setenv("E2I_FEAST_REGISTRY_URL", feast_registry_url(object_store.lock_db_url))
    anchor_hours_ago(monkeypatch, 0.5)
    settings = load_settings()
    assert settings.platform.store.url == object_store.url
    assert (settings.online_store, settings.platform.feature_store.registry) == ("redis", "sql")
    defs = definitions(settings)
    resources = _on_the_store(defs, settings)
    graph = [*defs.assets, *defs.asset_checks]

    def materialize(selection):
        result = dg.materialize(
            graph, resources=resources, instance=instance, selection=selection, raise_on_error=False
        )
        assert result.success, failed_steps(result)
        return result

    # The feature tables (and what they read) published to the object store.
    tables_run = materialize(FEATURE_TABLES)
    assert set(VIEWS) <= materialized(tables_run)
    keys = object_store.object_keys()
    for view in VIEWS:
        assert f"prefix/warehouse/{view}.parquet" in keys
    tables = {view: _published(object_store, view) for view in VIEWS}
    # The IO managers kept everything in the bucket: not one file under the home.
    home_before = _files_under(e2i_home)
    assert home_before == {}

    # Apply the registry and fill the online store from the object store's tables; the
    # freshness gate judges them in the same run.
    feast_run = materialize(FEAST_STEPS)
    assert {"feature_registry", "online_features"} <= materialized(feast_run)
    gate = evaluations(feast_run)["online_features.freshness"]
    assert gate.passed, gate.description
    feast = _feast(resources)
    assert str(feast.offline_dir) == f"{object_store.url}/warehouse"
    store = feast.store()
    for view in VIEWS:
        url = f"{object_store.url}/warehouse/{view}.parquet"
        assert store.get_feature_view(view).batch_source.path == url  # as applied
        assert offline_source(store, view).path == url  # as read
    per_view = {r["view"]: r for r in latest_metadata(instance, "online_features")["per_view"]}
    for view, table in tables.items():
        keys_of_view = list(VIEWS[view].join_keys)
        # The first incremental window starts at the first event: every offline row.
        assert per_view[view]["rows_in_window"] == len(table)
        assert per_view[view]["entities_in_window"] == len(table[keys_of_view].drop_duplicates())
        assert per_view[view]["entities_written"] == per_view[view]["entities_in_window"]
    # Served: the newest offline values.
    patients = tables["patient_features"]
    newest = patients[patients[EVENT_TIMESTAMP] == patients[EVENT_TIMESTAMP].max()]
    sample = newest.sort_values("patient_id").head(20)
    served = store.get_online_features(
        features=["patient_features:events_total", "patient_features:insurance_type"],
        entity_rows=[{"patient_id": p} for p in sample["patient_id"]],
    ).to_dict()
    assert served["events_total"] == sample["events_total"].tolist()
    assert served["insurance_type"] == sample["insurance_type"].tolist()

    # The freshness clocks read the object store's tables.
    sample_size = settings.feast.sample_size
    results = {r.view: r for r in evaluate_freshness(feast, settings.feast)}
    for view, table in tables.items():
        assert earliest_event(feast.offline_dir, view) == table[EVENT_TIMESTAMP].min()
        newest_keys = table.loc[
            table[EVENT_TIMESTAMP] == table[EVENT_TIMESTAMP].max(), list(VIEWS[view].join_keys)
        ].drop_duplicates()
        sampled = min(sample_size, len(newest_keys))
        assert missing_online(store, feast.offline_dir, view, sample_size) == (sampled, 0)
        assert results[view].status == "fresh", results[view]
        assert results[view].source_newest == table[EVENT_TIMESTAMP].max().isoformat()
        assert (results[view].sampled, results[view].missing) == (sampled, 0)

    # The point-in-time join on the object store's tables: the platform's DuckDB ASOF join
    # equals Feast's own join on the same sources and the platform's join on a local copy.
    entity_rows = _entity_rows(tables)
    service = store.get_feature_service(FEATURE_SERVICE)
    remote = training_frame(
        point_in_time_join(store, service, entity_rows.copy(), feast.spill_dir),
        list(entity_rows.columns),
    )
    assert not str(feast.spill_dir).startswith(str(e2i_home))
    feasts = _feast_join(store, entity_rows, feast.offline_dir)
    local = _local_join(tables, tmp_path / "local-copy", entity_rows)
    assert len(remote) == len(entity_rows)
    pd.testing.assert_frame_equal(remote, feasts, check_exact=True)
    pd.testing.assert_frame_equal(remote, local, check_exact=True)
    features = [c for c in remote.columns if "__" in c]
    unmatched = remote["patient_id"].eq("PAT_UNKNOWN") | remote[CUTOFF].dt.year.eq(2001)
    assert unmatched.sum() == 2
    assert (
        remote.loc[unmatched, [c for c in features if c.startswith("patient_")]].isna().all().all()
    )
    assert remote.loc[~unmatched, "patient_features__events_total"].notna().all()
    at_newest = remote[remote[CUTOFF].eq(newest[EVENT_TIMESTAMP].max()) & ~unmatched]
    expected = newest.set_index("patient_id")["events_total"]
    assert (
        at_newest["patient_features__events_total"].to_numpy()
        == expected[at_newest["patient_id"]].to_numpy()
    ).all()

    # Nothing the Feast steps, the joins or the freshness clocks did wrote under the home:
    # the registry is in PostgreSQL, the online store in Redis, the tables in the bucket,
    # DuckDB's spill directory in this machine's temporary directory.
    assert _files_under(e2i_home) == home_before == {}
    assert sorted(p.name for p in e2i_home.iterdir()) == []
