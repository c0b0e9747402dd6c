"""The paths a Feast registry stores, taken against the home in force.

The registry (`<home>/feast/registry.db`, or Feast's SQL registry shared by every
machine) records each view's offline source as an absolute path and, for the SQLite
online store, the database file of every online table. A copy of the home restored at
another path brings that registry along, and until the `feature_registry` asset
applies the repository again it names the original home's files; a SQL registry names
the files of the home of the machine that applied it last. So:

* readers of the offline sources take the view's file of this home
  (`offline_source`), never the path the registry recorded elsewhere;
* the Feast CLI wrapper points the recorded online tables at this home's database
  before Feast plans or applies (`repoint_online_tables`): `feast apply` tears down
  the tables the registry records, which would drop them from the original home's
  database, and merely reading the recorded tables opens that file.

Feast is imported by callers (these functions take a FeatureStore).
"""

from __future__ import annotations

from pathlib import Path


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


def offline_source(store, view: str):
    """The view's batch source, reading `<home>/warehouse/<view>.parquet` of this home.

    The recorded source is kept when it is that file. One that is the same file of
    another home (`…/warehouse/<view>.parquet`: the registry came with a copied home)
    is replaced by this home's; any other path is an error naming both."""
    from feast.infra.offline_stores.file_source import FileSource

    source = store.get_feature_view(view).batch_source
    expected = home_of(store) / "warehouse" / f"{view}.parquet"
    recorded = Path(source.path)
    if recorded == expected or recorded.resolve() == expected:
        return source
    if recorded.parts[-2:] != ("warehouse", f"{view}.parquet"):
        raise ValueError(
            f"{view}: the Feast registry's offline source {recorded} is not this home's "
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
