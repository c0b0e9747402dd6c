"""Who owns each stage's assets, and the tags that place an asset in the platform.

One table for the whole code location: the root definitions apply it to every asset
(`definitions.build_definitions`), so an asset added to a stage gets its owner and
tags without restating them. Tag keys and values follow Dagster's strict rules
(letters, digits, `_`, `-`, `.`; at most 63 characters; one `namespace/` prefix).
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

DATA_ENGINEERING = "team:data-engineering"
ML_ENGINEERING = "team:ml-engineering"

STAGE_TAG = "e2i/stage"  # the asset's stage: its group (ingest ... promotion)
DOMAIN_TAG = "e2i/domain"  # what the stage serves


@dataclass(frozen=True)
class Stage:
    owner: str
    domain: str


STAGES: dict[str, Stage] = {
    "ingest": Stage(DATA_ENGINEERING, "commercial-data"),
    "quality": Stage(DATA_ENGINEERING, "commercial-data"),
    "features": Stage(DATA_ENGINEERING, "feature-store"),
    "training": Stage(ML_ENGINEERING, "discontinuation-model"),
    "promotion": Stage(ML_ENGINEERING, "discontinuation-model"),
}


def stage_tags(group: str) -> dict[str, str]:
    return {STAGE_TAG: group, DOMAIN_TAG: STAGES[group].domain}


def with_ownership(spec: dg.AssetSpec) -> dg.AssetSpec:
    """The spec with its stage's owner and tags (kinds and other tags kept)."""
    if spec.group_name not in STAGES:
        raise KeyError(
            f"asset {spec.key.to_user_string()} is in group {spec.group_name!r}, which has "
            f"no owner: add it to e2i_platform.lib.ownership.STAGES ({sorted(STAGES)})"
        )
    owner = STAGES[spec.group_name].owner
    return spec.merge_attributes(
        owners=[] if owner in spec.owners else [owner], tags=stage_tags(spec.group_name)
    )
