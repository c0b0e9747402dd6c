"""The paths a Feast registry stores, taken against the home in force.

The registry (`<home>/feast/registry.db`, or Feast's SQL registry shared by every
machine) records each view's offline source as an absolute path (with an object store,
`platform.store.url`, the URL of its published table: `s3://bucket/prefix/warehouse/
<view>.parquet`) and, for the SQLite online store, the database file of every online
table. A copy of the home restored at another path brings that registry along, and until
the `feature_registry` asset applies the repository again it names the original home's
files; a SQL registry names the files of the home (or store) of the machine that applied
it last. So:

* readers of the offline sources take the view's file of this home or store
  (`offline_source`), never the path the registry recorded elsewhere;
* the Feast CLI wrapper points the recorded online tables at this home's database
  before Feast plans or applies (`repoint_online_tables`): `feast apply` tears down
  the tables the registry records, which would drop them from the original home's
  database, and merely reading the recorded tables opens that file.

Feast is imported by callers (these functions take a FeatureStore).
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit


def home_of(store) -> Path:
    """The home `store` was opened for: the one `FeastResource.store()` records on it
    (`e2i_home`), else the home of its registry file, which `FeastResource` keeps at
    `<home>/feast/registry.db` (a path relative to the repository). A SQL registry is
    shared by every home, so a store on one that names no home is an error."""
    if (home := getattr(store, "e2i_home", None)) is not None:
        return Path(home)
    if store.config.registry.registry_type != "file":
        raise ValueError(
            "feature store: a store on the SQL registry names no home; open it with "
            "FeastResource.store()"
        )
    registry = Path(store.config.registry.path)
    if not registry.is_absolute():
        registry = Path(store.repo_path) / registry
    return registry.resolve().parent.parent


def offline_dir_of(store) -> str | Path:
    """Where `store` reads the offline tables: the directory `FeastResource.store()`
    records on it (`e2i_offline_dir`: `<home>/warehouse`, or `<store url>/warehouse` for
    an object store), else `<home>/warehouse` of `home_of(store)`."""
    where = getattr(store, "e2i_offline_dir", None)
    if where is None:
        return home_of(store) / "warehouse"
    return str(where) if hasattr(where, "fs") else Path(where).resolve()


def _is_url(path: str) -> bool:
    return len(urlsplit(path).scheme) > 1


def _same_file(recorded: str, expected: str | Path) -> bool:
    """Whether the recorded path names the expected file: paths on disk compared as
    resolved paths, URLs as text (without a trailing slash)."""
    if _is_url(recorded) or isinstance(expected, str):
        return isinstance(expected, str) and recorded.rstrip("/") == expected.rstrip("/")
    return Path(recorded) == expected or Path(recorded).resolve() == expected


def _tail(path: str) -> tuple[str, ...]:
    """The last two parts of a path on disk or of a URL's path."""
    if _is_url(path):
        return PurePosixPath(urlsplit(path).path).parts[-2:]
    return Path(path).parts[-2:]


def offline_source(store, view: str):
    """The view's batch source, reading `<offline dir>/<view>.parquet` of this home: the
    file under the home, or in the object store every machine reads.

    The recorded source is kept when it is that file. One that is the same table of
    another home or store (`…/warehouse/<view>.parquet` on disk or behind a URL: the
    registry came with a copied home, or was applied before the warehouse moved to the
    object store) is replaced by this home's, so nothing reads another home's data; any
    other path is an error naming both."""
    from feast.infra.offline_stores.file_source import FileSource

    source = store.get_feature_view(view).batch_source
    offline_dir = offline_dir_of(store)
    expected = (
        f"{offline_dir.rstrip('/')}/{view}.parquet"
        if isinstance(offline_dir, str)
        else offline_dir / f"{view}.parquet"
    )
    recorded = source.path
    if _same_file(recorded, expected):
        return source
    if _tail(recorded) != ("warehouse", f"{view}.parquet"):
        shown = recorded if _is_url(recorded) else Path(recorded)
        raise ValueError(
            f"{view}: the Feast registry's offline source {shown} is not this home's "
            f"offline table {expected}; materialize feature_registry to apply the "
            "repository on this home"
        )
    proto = source.to_proto()
    proto.file_options.uri = str(expected)
    return FileSource.from_proto(proto)


def repoint_online_tables(store) -> list[str]:
    """Record the online tables at this home's SQLite database when the registry names
    another one (as `feast apply` records them); returns the other paths it named
    (empty: nothing was changed). Nothing to do for Redis."""
    if store.config.online_store.type != "sqlite":
        return []
    db = Path(store.config.online_store.path)
    if not db.is_absolute():
        db = Path(store.repo_path) / db
    # The raw proto: building Feast's infra objects would open each recorded database.
    infra = store.registry.proto().infra
    foreign = sorted(
        {
            o.sqlite_table.path
            for o in infra.infra_objects
            if o.HasField("sqlite_table") and Path(o.sqlite_table.path).resolve() != db.resolve()
        }
    )
    if foreign:
        planned = store.provider.plan_infra(store.config, store.registry.proto())
        store.registry.update_infra(planned, store.project, commit=True)
    return foreign
