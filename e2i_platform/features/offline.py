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
table, on disk or in the object store: `features.registry_paths`), and tests compare it
with Feast's own join (`tests/e2e/test_offline_join.py`; on an object store,
`tests/integration/test_feature_store_object_store.py`).

Both run in DuckDB sessions set to UTC (so casts of tz-aware event times to naive
ones are UTC whatever the machine's zone), with a memory limit and spilling to
disk, so a brand-sized join stays bounded.

The offline tables are the warehouse's published Parquet files: under the home, or in
the object store of `platform.store.url` (`s3://bucket/prefix/warehouse/<view>.parquet`,
`FeastResource.offline_dir`), which every machine reads. DuckDB reads an object store
through fsspec: the store's filesystem is registered on each connection that reads it
(`serve_object_stores`), so `read_parquet('s3://...')` needs no DuckDB extension (httpfs
cannot be installed without network access, and would not read AWS_ENDPOINT_URL).
Pandas and pyarrow read the same files through the same kind of filesystem
(`read_offline_table`). Nothing is written anywhere but DuckDB's spill directory.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pandas as pd

from e2i_platform.features.specs import CREATED_TIMESTAMP, EVENT_TIMESTAMP, VIEWS

if TYPE_CHECKING:
    from upath import UPath

MEMORY_LIMIT = "1GB"


# --- where the offline tables are ------------------------------------------------


def object_store_protocol(location) -> str | None:
    """The protocol of an object-store location (`s3` for `s3://bucket/key` or its UPath);
    None for a path on this machine's disk."""
    if hasattr(location, "fs"):
        protocol = location.protocol
        return None if protocol in ("", "file", "local") else protocol
    scheme = urlsplit(str(location)).scheme
    return scheme if len(scheme) > 1 and scheme != "file" else None


def _filesystem_options(protocol: str) -> dict:
    """No listings cache (another machine may have published since); for S3 the endpoint
    of AWS_ENDPOINT_URL, passed explicitly: fsspec keeps one instance per arguments, and
    one made for another endpoint must not be reused. Credentials come from the
    environment (botocore), never from here."""
    options: dict = {"use_listings_cache": False}
    if protocol in ("s3", "s3a") and os.environ.get("AWS_ENDPOINT_URL"):
        options["endpoint_url"] = os.environ["AWS_ENDPOINT_URL"]
    return options


def object_store_filesystem(protocol: str):
    """The fsspec filesystem of an object store (`s3`: s3fs)."""
    import fsspec

    return fsspec.filesystem(protocol, **_filesystem_options(protocol))


def as_location(where) -> Path | UPath:
    """A local `Path`, or a `UPath` for an object-store URL (kept as it is when it is one)."""
    if hasattr(where, "fs"):
        return where
    protocol = object_store_protocol(where)
    if protocol is None:
        return Path(where)
    from upath import UPath

    return UPath(str(where), **_filesystem_options(protocol))


def read_offline_table(location, columns=None, filters=None) -> pd.DataFrame:
    """A Parquet table on disk or in an object store (some `columns`, rows matching
    `filters`, as `pd.read_parquet` takes them); the object store's bytes are fetched by
    range, so a column subset reads only those columns."""
    protocol = object_store_protocol(location)
    if protocol is None:
        return pd.read_parquet(Path(location), columns=columns, filters=filters)
    fs = object_store_filesystem(protocol)
    return pd.read_parquet(
        fs._strip_protocol(str(location)), filesystem=fs, columns=columns, filters=filters
    )


def serve_object_stores(con, locations: Iterable) -> list[str]:
    """Register on DuckDB connection `con` the fsspec filesystem of every object store
    among `locations` (local paths are skipped), replacing one registered earlier for the
    same protocol (its endpoint may have changed); returns the protocols served."""
    served = []
    for protocol in sorted({p for p in map(object_store_protocol, locations) if p}):
        fs = object_store_filesystem(protocol)
        names = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
        registered = set(con.list_filesystems())
        for name in names:
            if name in registered:
                con.unregister_filesystem(name)
        con.register_filesystem(fs)
        served.append(protocol)
    return served


def _served_without_httpfs(backend) -> None:
    """ibis loads DuckDB's httpfs extension before it reads any `s3://` path. An object
    store served through fsspec needs no extension, and httpfs cannot be installed
    without network access (nor would it read AWS_ENDPOINT_URL): this backend skips it."""
    if getattr(backend, "_e2i_fsspec_serves", False):
        return
    load = backend._load_extensions

    def load_extensions(extensions, force_install=False):
        wanted = [e for e in extensions if e != "httpfs"]
        if wanted:
            load(wanted, force_install=force_install)

    backend._load_extensions = load_extensions
    backend._e2i_fsspec_serves = True


def bound(run_sql, spill_dir: str | Path | None = None) -> None:
    """The session settings above, through a connection's `run_sql`."""
    run_sql("SET TimeZone = 'UTC'")  # after connecting: it needs ICU, loaded on use
    run_sql(f"SET memory_limit = '{MEMORY_LIMIT}'")
    run_sql("SET preserve_insertion_order = false")  # order is asked for where it matters
    if spill_dir is not None:
        Path(spill_dir).mkdir(parents=True, exist_ok=True)
        run_sql(f"SET temp_directory = '{Path(spill_dir).as_posix()}'")


def bound_feast_session(*locations) -> None:
    """Bound the DuckDB connection Feast's ibis queries run on (ibis's default backend),
    and let it read the object store of any of `locations` (the offline directory, or
    sources' paths; local ones need nothing)."""
    import ibis

    backend = ibis.get_backend()
    bound(backend.raw_sql)
    if serve_object_stores(backend.con, locations):
        _served_without_httpfs(backend)


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
    if any(c in path for c in "*?[") or as_location(path).is_dir():
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
    from e2i_platform.features.registry_paths import offline_source

    projections = list(service.feature_view_projections)
    views = [f"v{n}" for n in range(len(projections))]
    ctes = [_as_of(store, n, p) for n, p in enumerate(projections)]
    sources = [offline_source(store, p.name).path for p in projections]
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
        serve_object_stores(con, sources)
        con.register("entity_rows", entity_rows.assign(_row=range(len(entity_rows))))
        # To pandas as Feast converts (pyarrow): ints with nulls become floats.
        return con.sql(sql).to_arrow_table().to_pandas()
    finally:
        con.close()


def offline_path(offline_dir: Path | UPath | str, view: str) -> Path | UPath:
    """A view's offline table in `offline_dir` (on disk or in an object store), which must exist."""
    return _existing(as_location(offline_dir) / f"{view}.parquet", view)


def _existing(path: Path | UPath, view: str) -> Path | UPath:
    if not path.exists():
        raise FileNotFoundError(f"{view}: no offline data at {path}; materialize the asset first")
    return path


def earliest_event(offline_dir: Path | UPath | str, view: str) -> datetime | None:
    """The oldest event time of a view's offline table, reading only that column."""
    column = read_offline_table(offline_path(offline_dir, view), columns=[EVENT_TIMESTAMP])
    oldest = column[EVENT_TIMESTAMP].min()
    return None if pd.isna(oldest) else pd.Timestamp(oldest).tz_convert("UTC").to_pydatetime()


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
    path = _existing(as_location(source.path), view)
    bound_feast_session(source.path)
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
    con = duckdb.connect()
    try:
        serve_object_stores(con, [source.path])
        (in_window,) = con.execute(
            f"SELECT count(*) FROM read_parquet(?) WHERE {EVENT_TIMESTAMP} BETWEEN ? AND ?",
            [path.as_posix() if isinstance(path, Path) else str(path), start, end],
        ).fetchone()
    finally:
        con.close()
    latest[EVENT_TIMESTAMP] = pd.to_datetime(latest[EVENT_TIMESTAMP], utc=True)
    return latest[list(spec.columns)].reset_index(drop=True), int(in_window)
