"""`no_leakage` on training_dataset: the training set cannot have seen its own future."""

import dagster as dg

from e2i_platform.lib.gate_results import SAMPLE_LIMIT, gate_result
from e2i_platform.resources.config import ConfigResource


def leakage_gate(df, max_abs_corr: float, prevalence_min: float, prevalence_max: float):
    import pandas as pd

    from e2i_platform.contract import LABEL_DERIVED
    from e2i_platform.training.dataset import (
        CUTOFF,
        LABEL,
        SPLIT,
        feature_columns,
        snapshot_columns,
    )

    counts: dict[str, int] = {}
    sample: list[dict] = []

    splits_per_patient = df.groupby("patient_id")[SPLIT].nunique()
    shared = splits_per_patient[splits_per_patient > 1]
    counts["patients in more than one split"] = len(shared)
    sample += [{"patient_id": p, "problem": "in several splits"} for p in shared.index[:5]]

    cutoff_epoch = (df[CUTOFF] - pd.Timestamp("1970-01-01", tz="UTC")) // pd.Timedelta(seconds=1)
    future = 0
    for col in snapshot_columns(df):
        late = df[col].notna() & (df[col] > cutoff_epoch)
        future += int(late.sum())
        sample += [
            {"row": int(i), "column": col, "problem": "feature snapshot after cutoff"}
            for i in df.index[late][:5]
        ]
    counts["feature values from after the row's cutoff"] = future

    label_derived = {c for cols in LABEL_DERIVED.values() for c in cols}
    features = feature_columns(df)
    derived = [c for c in features if c.split("__", 1)[1] in label_derived]
    counts["label-derived feature columns"] = len(derived)

    numeric = df[features].select_dtypes("number")
    corr = numeric.corrwith(df[LABEL].astype(float)).abs().dropna()
    too_high = corr[corr > max_abs_corr]
    counts[f"features with |corr(label)| > {max_abs_corr}"] = len(too_high)
    sample += [{"column": c, "abs_corr": round(float(v), 4)} for c, v in too_high.items()]

    prevalence = float(df[LABEL].mean()) if len(df) else float("nan")
    in_band = prevalence_min <= prevalence <= prevalence_max
    counts["label prevalence outside band"] = 0 if in_band else 1

    failing = {k: v for k, v in counts.items() if v}
    return gate_result(
        passed=not failing,
        blocking_failure=True,
        summary=("no leakage: " if not failing else "leakage: ")
        + (
            ", ".join(f"{k} ({v})" for k, v in failing.items())
            if failing
            else f"{len(df)} rows, prevalence {prevalence:.3f}, max |corr| "
            f"{(corr.max() if len(corr) else 0):.3f}"
        ),
        rows_checked=len(df),
        failing_rows=future,
        failure_counts=failing,
        sample=sample[:SAMPLE_LIMIT],
        extra={
            "prevalence": round(prevalence, 6),
            "prevalence_band": [prevalence_min, prevalence_max],
            "max_abs_label_correlation": round(float(corr.max()), 6) if len(corr) else 0.0,
            "correlation_threshold": max_abs_corr,
            "top_correlations": {
                c: round(float(v), 4) for c, v in corr.sort_values(ascending=False).head(5).items()
            },
        },
    )


@dg.asset_check(
    asset="training_dataset",
    name="no_leakage",
    blocking=True,
    description=(
        "No patient in two splits; no feature value from after its row's cutoff (each view "
        "serves its snapshot epoch); no label-derived feature; no feature with |correlation| "
        "with the label above the limit; label prevalence within the configured band."
    ),
)
def no_leakage(training_dataset, e2i_config: ConfigResource) -> dg.AssetCheckResult:
    leakage = e2i_config.settings().training.leakage
    return leakage_gate(
        training_dataset,
        leakage.max_abs_label_correlation,
        leakage.prevalence.min,
        leakage.prevalence.max,
    )
