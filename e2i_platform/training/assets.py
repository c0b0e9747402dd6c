"""Training-stage assets."""

import dagster as dg

from e2i_platform.lib.gates import gated_asset
from e2i_platform.resources.config import ConfigResource
from e2i_platform.resources.feast import FeastResource


@gated_asset(
    group_name="training",
    kinds={"pandas", "parquet", "feast"},
    io_manager_key="warehouse",
    deps=["online_features"],
)
def training_dataset(
    patient_journeys, treatment_events, feast: FeastResource, e2i_config: ConfigResource
) -> dg.Output:
    """Patient-level discontinuation labels at cutoff dates (every `cutoff_every_days`),
    joined point-in-time with the feature service `discontinuation_model_v1` through
    Feast's `get_historical_features`. No entity row is dropped: rows Feast returns no
    match for are kept with null features and counted. Chronological train / validation /
    test split with a gap of one outcome window and each patient in one split only.
    Runs only after the online store passed its `freshness` gate; gated by `no_leakage`."""
    from e2i_platform.training.dataset import (
        LABEL,
        SPLIT,
        DatasetSpec,
        chronological_split,
        feature_columns,
        join_features,
        label_rows,
    )

    cfg = e2i_config.settings().training.dataset
    spec = DatasetSpec(**cfg.model_dump())
    store = feast.store()
    entity_rows = label_rows(patient_journeys, treatment_events, spec)
    joined, join_stats = join_features(store, entity_rows)
    dataset, split_stats = chronological_split(joined, spec)
    by_split = dataset.groupby(SPLIT)[LABEL].agg(["size", "mean"])
    return dg.Output(
        dataset,
        metadata={
            "rows_per_split": dg.MetadataValue.json(
                {s: int(n) for s, n in by_split["size"].items()}
            ),
            "prevalence_per_split": dg.MetadataValue.json(
                {s: round(float(p), 4) for s, p in by_split["mean"].items()}
            ),
            "cutoffs": dg.MetadataValue.int(int(dataset["event_timestamp"].nunique())),
            "features": dg.MetadataValue.json(feature_columns(dataset)),
            "point_in_time_join": dg.MetadataValue.json(join_stats),
            "split": dg.MetadataValue.json(split_stats),
        },
    )
