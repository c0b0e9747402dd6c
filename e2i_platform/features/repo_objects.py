"""Feast entities, sources, feature views and the feature service, from the specs.

Imported by `feature_repo/repo.py` (the Feast CLI) and by the `feature_registry`
asset, so both apply exactly the same objects. Feast is imported here, so only
call this inside asset bodies.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from e2i_platform.features.specs import (
    CREATED_TIMESTAMP,
    ENTITIES,
    EVENT_TIMESTAMP,
    FEATURE_SERVICE,
    SERVICE_VIEWS,
    VIEWS,
)


def source_path(offline_dir, view: str) -> str:
    """A view's offline table in `offline_dir`: a path on disk, or the URL of the object
    store's published table (`s3://bucket/prefix/warehouse/<view>.parquet`), which Feast's
    DuckDB store reads through fsspec (`features.offline`)."""
    if hasattr(offline_dir, "fs") or "://" in str(offline_dir):
        return f"{str(offline_dir).rstrip('/')}/{view}.parquet"
    return str(Path(offline_dir) / f"{view}.parquet")


def build_objects(offline_dir, intervals: dict[str, list] | None = None) -> list:
    """The repository's objects, their sources in `offline_dir` (a local path, or the
    object store's warehouse: `FeastResource.offline_dir`); `intervals` (view name ->
    materialization intervals) are set on the views, as the Feast CLI's plan needs (see
    feature_repo/repo.py)."""
    from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
    from feast.types import Float64, Int64, String

    dtypes = {"float": Float64, "int": Int64, "str": String}
    entities = {
        name: Entity(
            name=name,
            join_keys=[e.join_key],
            value_type=ValueType.STRING,
            description=e.description,
        )
        for name, e in ENTITIES.items()
    }
    views = {}
    for name, spec in VIEWS.items():
        source = FileSource(
            name=f"{name}_source",
            path=source_path(offline_dir, name),
            timestamp_field=EVENT_TIMESTAMP,
            created_timestamp_column=CREATED_TIMESTAMP,
        )
        views[name] = FeatureView(
            name=name,
            entities=[entities[e] for e in spec.entities],
            ttl=timedelta(days=spec.ttl_days),
            schema=[
                Field(name=f.name, dtype=dtypes[f.dtype], description=f.description)
                for f in spec.features
            ],
            source=source,
            online=True,
            description=spec.description,
        )
        views[name].materialization_intervals = list((intervals or {}).get(name, []))
    service = FeatureService(
        name=FEATURE_SERVICE,
        features=[views[v] for v in SERVICE_VIEWS],
        description="Features of the patient discontinuation model (training and serving).",
    )
    return [*entities.values(), *views.values(), service]


def applied_intervals(home: Path) -> dict[str, list]:
    """The materialization intervals of each view in the registry of `home` (its file,
    or the SQL registry of the settings in force; the project of the settings in force);
    none when nothing was applied there yet."""
    from e2i_platform.resources.feast import FeastResource
    from e2i_platform.settings import load_settings

    resource = FeastResource.for_settings(load_settings()).model_copy(update={"home": str(home)})
    if not resource.has_registry():
        return {}
    store = resource.store()
    return {v.name: list(v.materialization_intervals) for v in store.list_feature_views()}


def repo_offline_dir(home: Path):
    """The offline directory the Feast CLI's repository names for `home`: its
    `warehouse/`, or with an object store (`platform.store.url` of the settings in force)
    the store's, as the `feature_registry` asset applies it."""
    from e2i_platform.resources.feast import FeastResource
    from e2i_platform.settings import load_settings

    resource = FeastResource.for_settings(load_settings()).model_copy(update={"home": str(home)})
    return resource.offline_dir if resource.remote_offline else home.resolve() / "warehouse"


def repoint_registry(home: Path) -> list[str]:
    """Make the registry under `home` record this home's SQLite online tables when it
    names another home's (it came with a copied home); returns the other paths. Run
    before Feast plans: `feast apply` tears down the tables the registry records, which
    would drop them from the other home's database (`features.registry_paths`)."""
    from e2i_platform.features.registry_paths import repoint_online_tables
    from e2i_platform.resources.feast import FeastResource
    from e2i_platform.settings import load_settings

    resource = FeastResource.for_settings(load_settings()).model_copy(update={"home": str(home)})
    if not resource.has_registry():
        return []
    return repoint_online_tables(resource.store())
