"""`no_leakage` on training_dataset: the training set cannot have seen its own future
(the rules: `training.leakage`)."""

import dagster as dg

from e2i_platform.lib.gate_checks import gate_check
from e2i_platform.resources.config import ConfigResource


@gate_check(
    asset="training_dataset",
    name="no_leakage",
    description=(
        "No patient in two splits; no feature value from after its row's cutoff (every view "
        "serves its snapshot epoch); splits in chronological order with at least one outcome "
        "window between them; no label-derived, all-null, ID-like or label-predicting feature "
        "of any dtype (single-feature ROC-AUC above the limit); label prevalence in its band."
    ),
)
def no_leakage(training_dataset, e2i_config: ConfigResource) -> dg.AssetCheckResult:
    from e2i_platform.training.leakage import leakage_gate

    training = e2i_config.settings().training
    leakage = training.leakage
    return leakage_gate(
        training_dataset,
        max_single_feature_auc=leakage.max_single_feature_auc,
        prevalence_min=leakage.prevalence.min,
        prevalence_max=leakage.prevalence.max,
        # chronological_split leaves one outcome window between consecutive splits.
        split_gap_days=training.dataset.outcome_window_days,
        max_text_singleton_share=leakage.max_text_singleton_share,
    )
