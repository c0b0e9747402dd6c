"""Reading the offline feature tables with DuckDB: Feast's DuckDB offline store, and a
point-in-time join written as DuckDB ASOF joins.

The latest-row-per-entity pull (materialization) is the DuckDB store's own query
on the Parquet FileSources. Its point-in-time join is a range join (every feature
row of an entity up to the entity row's time, then a window function to keep the
newest): at 100,000 patients that is ~35M intermediate rows for the patient view
alone, minutes of sorting. `point_in_time_join` asks DuckDB the same question as
an ASOF join (per entity row, the newest feature row at or before its time, in
one merge pass), with Feast's rules: the view's ttl bounds how old a value may be,
equal event times are decided by the newest created time, and every entity row
comes back, with nulls where a view has nothing. It reads the views, their
sources, join keys and ttl from the Feast registry (each source taken as this home's
file: `features.registry_paths`), and tests compare it with Feast's own join
(`tests/e2e/test_offline_join.py`).

Both run in DuckDB sessions set to UTC (so casts of tz-aware event times to naive
ones are UTC whatever the machine's zone), with a memory limit and spilling to
disk, so a brand-sized join stays bounded.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pandas as pd

from e2i_platform.features.specs import CREATED_TIMESTAMP, EVENT_TIMESTAMP, VIEWS

MEMORY_LIMIT = "1GB"


def bound(run_sql, spill_dir: str | Path | None = None) -> None:
    """The session settings above, through a connection's `run_sql`."""
    run_sql("SET TimeZone = 'UTC'")  # after connecting: it needs ICU, loaded on use
    run_sql(f"SET memory_limit = '{MEMORY_LIMIT}'")
    run_sql("SET preserve_insertion_order = false")  # order is asked for where it matters
    if spill_dir is not None:
        Path(spill_dir).mkdir(parents=True, exist_ok=True)
        run_sql(f"SET temp_directory = '{Path(spill_dir).as_posix()}'")


def bound_feast_session() -> None:
    """Bound the DuckDB connection Feast's ibis queries run on (ibis's default backend)."""
    import ibis

    bound(ibis.get_backend().raw_sql)


def _name(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _as_of(store, n: int, projection) -> str:
    """One view as a CTE: per entity row (`_row`), its features as of the row's time.

    The ASOF join matches on keys and times only and carries the matched row's
    position in the file (`file_row_number`); the features are fetched by position
    afterwards. Carrying them through the join's sort instead took twice as long."""
    from e2i_platform.features.registry_paths import offline_source

    view = store.get_feature_view(projection.name)
    source = offline_source(store, projection.name)  # this home's file, wherever applied
    path = _text(_single_file(source.path, projection.name))
    keys = [c.name for c in view.entity_columns]
    ts, v = _name(source.timestamp_field), f"v{n}"
    # Feast's rules: a value older than the view's ttl is no value; of rows with the same
    # key and event time, the newest created one counts.
    fresh = f"m._ts >= e.{EVENT_TIMESTAMP} - INTERVAL {int(view.ttl.total_seconds())} SECOND"
    newest = (
        f"ORDER BY {_name(source.created_timestamp_column)} DESC"
        if source.created_timestamp_column
        else ""
    )
    rows = (
        f"SELECT {', '.join(map(_name, keys))}, {ts} AS _ts, file_row_number AS _pos "
        f"FROM read_parquet({path}, file_row_number = true) "
        f"QUALIFY row_number() OVER (PARTITION BY {', '.join(map(_name, keys))}, {ts} {newest}) = 1"
    )
    on = " AND ".join(f"e.{_name(projection.join_key_map.get(k, k))} = m.{_name(k)}" for k in keys)
    match = (
        f"SELECT e._row, CASE WHEN {fresh if view.ttl else 'TRUE'} THEN m._pos END AS _pos "
        f"FROM entity_rows e ASOF LEFT JOIN ({rows}) m ON {on} AND e.{EVENT_TIMESTAMP} >= m._ts"
    )
    values = ", ".join(
        f"f.{_name(f.name)} AS {_name(f'{projection.name}__{f.name}')}" for f in projection.features
    )
    return (
        f"{v} AS (SELECT a._row, {values} FROM ({match}) a "
        f"LEFT JOIN read_parquet({path}, file_row_number = true) f ON f.file_row_number = a._pos)"
    )


def _single_file(path: str, view: str) -> str:
    """A row's position names it only within one file: a view's source is one Parquet file."""
    if any(c in path for c in "*?[") or Path(path).is_dir():
        raise ValueError(
            f"{view}: batch source {path} is not a single Parquet file; the point-in-time "
            "join addresses feature rows by their position in the file"
        )
    return path


def point_in_time_join(
    store, service, entity_rows: pd.DataFrame, spill_dir: str | Path | None = None
) -> pd.DataFrame:
    """Every entity row, in order, with the feature service's features as of its
    `event_timestamp`, named `<view>__<feature>` (Feast's full feature names)."""
    projections = list(service.feature_view_projections)
    views = [f"v{n}" for n in range(len(projections))]
    ctes = [_as_of(store, n, p) for n, p in enumerate(projections)]
    features = ", ".join(
        f"{v}.{_name(f'{p.name}__{f.name}')}"
        for v, p in zip(views, projections, strict=True)
        for f in p.features
    )
    joins = " ".join(f"JOIN {v} USING (_row)" for v in views)
    sql = (
        f"WITH {', '.join(ctes)} SELECT e.* EXCLUDE (_row), {features} "
        f"FROM entity_rows e {joins} ORDER BY e._row"
    )
    import duckdb

    con = duckdb.connect()
    try:
        bound(con.execute, spill_dir)
        con.register("entity_rows", entity_rows.assign(_row=range(len(entity_rows))))
        # To pandas as Feast converts (pyarrow): ints with nulls become floats.
        return con.sql(sql).to_arrow_table().to_pandas()
    finally:
        con.close()


def offline_path(offline_dir: Path, view: str) -> Path:
    return _existing(Path(offline_dir) / f"{view}.parquet", view)


def _existing(path: Path, view: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{view}: no offline data at {path}; materialize the asset first")
    return path


def earliest_event(offline_dir: Path, view: str) -> datetime | None:
    """The oldest event time of a view's offline table, reading only that column."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    column = pq.read_table(offline_path(offline_dir, view), columns=[EVENT_TIMESTAMP])[0]
    oldest = pc.min(column).as_py()
    return None if oldest is None else pd.Timestamp(oldest).tz_convert("UTC").to_pydatetime()


def latest_in_window(store, view: str, start: datetime, end: datetime) -> tuple[pd.DataFrame, int]:
    """The newest row per entity with start <= event time <= end (ties: newest created),
    pulled by the DuckDB store's own materialization query, and how many offline rows
    fell in the window."""
    import duckdb
    from feast.infra.offline_stores.duckdb import DuckDBOfflineStore

    if store.config.offline_store.type != "duckdb":
        raise ValueError(
            f"feature store: offline_store.type is {store.config.offline_store.type!r}; "
            "feature_repo/feature_store*.yaml must select duckdb"
        )
    from e2i_platform.features.registry_paths import offline_source

    spec = VIEWS[view]
    source = offline_source(store, view)  # this home's file, wherever the registry was applied
    path = _existing(Path(source.path), view)
    bound_feast_session()
    latest = DuckDBOfflineStore.pull_latest_from_table_or_query(
        config=store.config,
        data_source=source,
        join_key_columns=list(spec.join_keys),
        feature_name_columns=list(spec.feature_names),
        timestamp_field=EVENT_TIMESTAMP,
        created_timestamp_column=CREATED_TIMESTAMP,
        start_date=start,
        end_date=end,
    ).to_df()
    (in_window,) = duckdb.execute(
        f"SELECT count(*) FROM read_parquet(?) WHERE {EVENT_TIMESTAMP} BETWEEN ? AND ?",
        [path.as_posix(), start, end],
    ).fetchone()
    latest[EVENT_TIMESTAMP] = pd.to_datetime(latest[EVENT_TIMESTAMP], utc=True)
    return latest[list(spec.columns)].reset_index(drop=True), int(in_window)
