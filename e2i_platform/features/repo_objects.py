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


def build_objects(offline_dir: str | Path) -> list:
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
            path=str(Path(offline_dir) / f"{name}.parquet"),
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
    service = FeatureService(
        name=FEATURE_SERVICE,
        features=[views[v] for v in SERVICE_VIEWS],
        description="Features of the patient discontinuation model (training and serving).",
    )
    return [*entities.values(), *views.values(), service]
