"""The training set's point-in-time join (DuckDB ASOF joins) equals, on the same offline
data, Feast's own join on its DuckDB offline store and the join the platform used before
(Feast's Dask file store, view by view, merged back onto every entity row), and loses no
entity row."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import dagster as dg
import pandas as pd

from e2i_platform.features.specs import CREATED_TIMESTAMP, EVENT_TIMESTAMP, FEATURE_SERVICE
from e2i_platform.settings import load_settings
from e2i_platform.training.dataset import (
    CUTOFF,
    ENTITY_COLUMNS,
    LABEL,
    join_features,
    training_frame,
)

from support import definitions, feast_resource, materialized, read_offline, run

REPO = Path(__file__).resolve().parents[2]


def _reference():
    """The join the platform used before, kept as bench/join.py (the scaling benchmark
    times it too): Feast's Dask file store, one request per view, merged back."""
    spec = importlib.util.spec_from_file_location("bench_join", REPO / "bench" / "join.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _correct_one_value(feast, patient: str, cutoff) -> float:
    """A second row for the snapshot `patient`'s row at `cutoff` reads, created later, with
    another engagement_score: written as a new file (the published one is hard-linked)."""
    path = feast.offline_dir / "patient_features.parquet"
    table = pd.read_parquet(path)
    mine = table[(table["patient_id"] == patient) & (table[EVENT_TIMESTAMP] <= cutoff)]
    row = mine.sort_values(EVENT_TIMESTAMP).tail(1).copy()
    row[CREATED_TIMESTAMP] = row[CREATED_TIMESTAMP] + pd.Timedelta(hours=1)
    row["engagement_score"] = row["engagement_score"] + 1.25
    tmp = path.with_suffix(".tmp")
    pd.concat([table, row], ignore_index=True).to_parquet(tmp, index=False)
    os.replace(tmp, path)
    return float(row["engagement_score"].iloc[0])


def _feast_duckdb_join(store, entity_rows: pd.DataFrame) -> pd.DataFrame:
    """Feast's get_historical_features on its DuckDB store, in the platform's shape."""
    from e2i_platform.features.offline import bound_feast_session

    assert store.config.offline_store.type == "duckdb"
    bound_feast_session()
    joined = store.get_historical_features(
        entity_df=entity_rows,
        features=store.get_feature_service(FEATURE_SERVICE),
        full_feature_names=True,
    ).to_df()
    return training_frame(joined, list(entity_rows.columns))


def test_duckdb_join_equals_the_dask_join_and_keeps_every_entity_row(e2i_home, instance):
    defs = definitions(load_settings())
    result = run(defs, instance, selection=dg.AssetSelection.assets("training_dataset").upstream())
    assert {"feature_registry", "training_dataset"} <= materialized(result)
    feast = feast_resource(defs)
    dataset = pd.read_parquet(e2i_home / "warehouse" / "training_dataset.parquet")
    entity_rows = dataset[[*ENTITY_COLUMNS, CUTOFF, LABEL]].copy()
    # Rows no view can match: an unknown patient, HCP and market, and a cutoff before
    # the first snapshot. They must come back, with null features.
    orphan = entity_rows.iloc[[0, 0]].copy()
    orphan["patient_id"] = ["PAT_UNKNOWN", entity_rows["patient_id"].iloc[0]]
    orphan["hcp_id"] = ["HCP_UNKNOWN", entity_rows["hcp_id"].iloc[0]]
    orphan["brand"] = ["NoSuchBrand", entity_rows["brand"].iloc[0]]
    orphan[CUTOFF] = [entity_rows[CUTOFF].iloc[0], pd.Timestamp("2001-01-01", tz="UTC")]
    # The ttl (30 days): a value 29 days old is served, one 31 days old is not.
    newest = read_offline(feast.offline_dir, "patient_features")[EVENT_TIMESTAMP].max()
    aging = entity_rows.iloc[[0, 0]].copy()
    aging[CUTOFF] = [newest + pd.Timedelta(days=29), newest + pd.Timedelta(days=31)]
    entity_rows = pd.concat([entity_rows, orphan, aging], ignore_index=True)
    # Two rows with the same key and event time: the newer created one counts.
    patient, cutoff = entity_rows["patient_id"].iloc[0], entity_rows[CUTOFF].iloc[0]
    corrected = _correct_one_value(feast, patient, cutoff)

    store = feast.store()
    new, stats = join_features(store, entity_rows)
    reference = _reference()
    old = reference.dask_join(reference.dask_store(feast), entity_rows)
    feasts = _feast_duckdb_join(store, entity_rows)

    assert len(new) == len(entity_rows) == stats["entity_rows"]
    pd.testing.assert_frame_equal(new, old, check_exact=True)
    pd.testing.assert_frame_equal(new, feasts, check_exact=True)
    features = [c for c in new.columns if "__" in c]
    unmatched = new[new["patient_id"].eq("PAT_UNKNOWN") | new[CUTOFF].dt.year.eq(2001)]
    assert len(unmatched) == 2 and unmatched[features].isna().all().all()
    value = "patient_features__engagement_score"
    at = new.set_index(["patient_id", CUTOFF])[value]
    assert at[(patient, cutoff)] == corrected
    served = read_offline(feast.offline_dir, "patient_features")
    served = served[(served["patient_id"] == patient) & (served[EVENT_TIMESTAMP] == newest)]
    assert at[(patient, newest + pd.Timedelta(days=29))] == served["engagement_score"].iloc[0]
    assert pd.isna(at[(patient, newest + pd.Timedelta(days=31))])
    # Rows built here (or changed by the correction) are not in the stored training set.
    added = new[CUTOFF].gt(newest) | (new["patient_id"].eq(patient) & new[CUTOFF].eq(cutoff))
    unmatched = pd.concat([unmatched, new[added]])
    # The stored training set was built by this join: its features equal a fresh join.
    stored = dataset.drop(columns="split")
    stored = stored[~(stored["patient_id"].eq(patient) & stored[CUTOFF].eq(cutoff))]
    again = new[~new.index.isin(unmatched.index)].reset_index(drop=True)
    merged = stored.merge(again, on=[*ENTITY_COLUMNS, CUTOFF], suffixes=("", "_again"))
    assert len(merged) == len(stored)
    for column in features:
        pd.testing.assert_series_equal(
            merged[column], merged[f"{column}_again"], check_names=False, check_exact=True
        )
