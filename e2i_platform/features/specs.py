"""What the feature store holds: entities, feature views, the training feature service.

The entities and views are the data contract's (`contract.feature_views`, read by
shared code too); this module adds the feature service the discontinuation model
trains on. Pure Python (no Feast, no pandas): the Dagster assets, the Feast
repository (`feature_repo/`), the freshness monitor and the tests all read these
specs.
"""

from __future__ import annotations

from e2i_platform.contract.feature_views import (
    CREATED_TIMESTAMP,
    ENTITIES,
    EVENT_TIMESTAMP,
    SNAPSHOT_EPOCH,
    VIEWS,
)

__all__ = [
    "CREATED_TIMESTAMP",
    "ENTITIES",
    "EVENT_TIMESTAMP",
    "FEATURE_SERVICE",
    "SERVICE_VIEWS",
    "SNAPSHOT_EPOCH",
    "VIEWS",
]

FEATURE_SERVICE = "discontinuation_model_v1"

# What the discontinuation model trains on: every view, joined on the patient, the
# patient's HCP and the journey's brand and region.
SERVICE_VIEWS = tuple(VIEWS)
