"""The feature store's vocabulary: entities, feature views, their columns and timestamps.

Part of the data contract (the one place that names tables and columns): the
feature views are tables the platform writes, and shared code reads their names and
column descriptions (the `feast.views` settings are validated against `VIEWS`; table
metadata documents feature columns from it) without importing the features stage.
`features.specs` adds the training feature service; `features/` computes the views.

Pure Python (no Feast, no pandas). Every feature is computed only from validated
tables and only from data known at its snapshot time; label-derived columns
(contract.LABEL_DERIVED) never appear.
"""

from __future__ import annotations

from dataclasses import dataclass

EVENT_TIMESTAMP = "event_timestamp"
CREATED_TIMESTAMP = "created_timestamp"
TIMESTAMP_DESCRIPTIONS = {
    EVENT_TIMESTAMP: "Snapshot time (UTC): the values use only data known by then",
    CREATED_TIMESTAMP: "When the values were computed (UTC)",
}
# Every view also serves the epoch second of the snapshot its values come from, so a
# training row can prove it saw nothing after its cutoff. Provenance, never a model input.
SNAPSHOT_EPOCH = "snapshot_epoch"


@dataclass(frozen=True)
class EntitySpec:
    name: str
    join_key: str
    description: str


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    dtype: str  # "float", "int" or "str"
    description: str


@dataclass(frozen=True)
class ViewSpec:
    name: str  # also the Dagster asset and the offline Parquet file
    entities: tuple[str, ...]
    features: tuple[FeatureSpec, ...]
    ttl_days: int
    inputs: tuple[str, ...]  # validated tables it is computed from
    description: str

    @property
    def join_keys(self) -> tuple[str, ...]:
        return tuple(ENTITIES[e].join_key for e in self.entities)

    def __post_init__(self):
        provenance = FeatureSpec(SNAPSHOT_EPOCH, "int", "Epoch seconds of the snapshot")
        object.__setattr__(self, "features", (*self.features, provenance))

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    @property
    def columns(self) -> tuple[str, ...]:
        return (*self.join_keys, EVENT_TIMESTAMP, CREATED_TIMESTAMP, *self.feature_names)


ENTITIES = {
    e.name: e
    for e in (
        EntitySpec("patient", "patient_id", "A patient (PAT + 8 digits)"),
        EntitySpec("hcp", "hcp_id", "A healthcare professional (HCP + 8 digits)"),
        EntitySpec("brand", "brand", "A brand of the contract's brand enum"),
        EntitySpec("region", "region", "A US census region"),
    )
}


def _f(name: str, dtype: str, description: str) -> FeatureSpec:
    return FeatureSpec(name, dtype, description)


VIEWS = {
    v.name: v
    for v in (
        ViewSpec(
            name="patient_features",
            entities=("patient",),
            ttl_days=30,
            inputs=("patient_journeys", "treatment_events"),
            description="Patient activity and clinical profile as of each snapshot.",
            features=(
                _f("journeys_started", "int", "Journeys started by the snapshot"),
                _f("events_total", "int", "Treatment events so far"),
                _f("events_90d", "int", "Treatment events in the last 90 days"),
                _f("adverse_events_90d", "int", "Adverse events in the last 90 days"),
                _f("adverse_event_rate", "float", "Share of events so far with an adverse event"),
                _f("cost_90d", "float", "Event cost in the last 90 days (USD)"),
                _f("days_since_last_event", "float", "Days since the latest event"),
                _f("days_on_therapy", "float", "Days since the first journey started"),
                _f("engagement_score", "float", "Engagement score of the latest journey"),
                _f("disease_severity", "float", "Severity score of the latest journey"),
                _f("insurance_type", "str", "Payer type of the latest journey"),
                _f("age_group", "str", "Age band"),
            ),
        ),
        ViewSpec(
            name="hcp_features",
            entities=("hcp",),
            ttl_days=30,
            inputs=("hcp_profiles", "patient_journeys", "treatment_events"),
            description="HCP profile and the recent outcomes of the HCP's patients.",
            features=(
                _f("decile", "int", "Prescribing decile"),
                _f("priority_tier", "int", "Commercial priority"),
                _f("years_experience", "int", "Years in practice"),
                _f("digital_engagement_score", "float", "Engagement with digital channels"),
                _f("peer_influence_score", "float", "Influence on peers"),
                _f("patients_treated", "int", "Distinct patients with a journey so far"),
                _f(
                    "patient_adverse_rate_180d", "float", "Adverse share of patients' recent events"
                ),
            ),
        ),
        ViewSpec(
            name="trigger_features",
            entities=("patient",),
            ttl_days=30,
            inputs=("triggers", "patient_journeys"),
            description="Next-best-action triggers about the patient and how HCPs responded "
            "(every patient with a journey; no trigger is a zero).",
            features=(
                _f("triggers_30d", "int", "Triggers in the last 30 days"),
                _f("critical_triggers_30d", "int", "Critical-priority triggers, last 30 days"),
                _f("trigger_acceptance_rate_90d", "float", "Accepted share, last 90 days"),
                _f("trigger_confidence_90d", "float", "Mean trigger confidence, last 90 days"),
            ),
        ),
        ViewSpec(
            name="market_features",
            entities=("brand", "region"),
            ttl_days=30,
            inputs=("business_metrics",),
            description="Brand KPIs by region over the last 30 days.",
            features=(
                _f("achievement_rate_30d", "float", "Mean KPI achievement, last 30 days"),
                _f("market_share_30d", "float", "Mean market-share rate, last 30 days"),
                _f("net_sales_30d", "float", "Net sales, last 30 days"),
            ),
        ),
    )
}
