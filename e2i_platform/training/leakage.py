"""The `no_leakage` rules: a training set that cannot have seen its own future.

What it judges, on the rows as they will be trained on:

- patients: no patient in more than one split;
- time: every view joined in serves its snapshot-epoch column, every row with a view's
  features has that view's epoch, and no epoch is after the row's cutoff;
- splits: train, validation and test cutoffs in that order with at least the gap
  `chronological_split` leaves (one outcome window) between consecutive splits;
- features, of any dtype: none label-derived by name, none entirely null, none whose
  values alone rank the label better than the single-feature ROC-AUC limit, none whose
  nulls alone do, and no ID-like (mostly unique) text feature;
- the label: prevalence within its band.

Single-feature scoring of any dtype: `training.feature_auc`.
"""

import dagster as dg

from e2i_platform.lib.gate_results import SAMPLE_LIMIT, gate_result

SPLIT_ORDER = ("train", "validation", "test")
PER_KIND_SAMPLE = 5  # sample entries per failure kind, so every kind shows in the sample


def _split_order(df):
    """Consecutive splits' (last cutoff, first cutoff): `chronological_split` puts every
    validation cutoff at or after the first validation cutoff, drops train rows within
    one gap of it, and does the same between validation and test."""
    from e2i_platform.training.dataset import CUTOFF, SPLIT

    bounds = df.groupby(SPLIT)[CUTOFF].agg(["min", "max"])
    present = [s for s in SPLIT_ORDER if s in bounds.index]
    pairs = []
    for earlier, later in zip(present, present[1:], strict=False):
        last, first = bounds.at[earlier, "max"], bounds.at[later, "min"]
        pairs.append((f"{earlier}->{later}", last, first, first - last))
    missing = [s for s in SPLIT_ORDER if s not in bounds.index]
    cutoffs = {
        s: [bounds.at[s, "min"].isoformat(), bounds.at[s, "max"].isoformat()] for s in present
    }
    return pairs, missing, cutoffs


def leakage_gate(
    df,
    max_single_feature_auc: float,
    prevalence_min: float,
    prevalence_max: float,
    split_gap_days: int,
    max_text_singleton_share: float = 0.5,
) -> dg.AssetCheckResult:
    """Judge a training set (the rows `chronological_split` returns) against every rule in
    this module's docstring; `split_gap_days` is the gap that split leaves (one outcome
    window). Every failing rule is counted under its own name, with a sample naming the
    column, split or row and the observed value against its limit."""
    from itertools import islice

    import numpy as np
    import pandas as pd

    from e2i_platform.contract import LABEL_DERIVED
    from e2i_platform.features.specs import SNAPSHOT_EPOCH
    from e2i_platform.training.dataset import CUTOFF, LABEL, SPLIT, feature_columns
    from e2i_platform.training.feature_auc import feature_evidence

    counts: dict[str, int] = {}
    sample: list[dict] = []

    def fail(name: str, n: int, entries=()) -> None:
        counts[name] = int(n)
        if n:
            sample.extend(islice(entries, PER_KIND_SAMPLE))

    splits_per_patient = df.groupby("patient_id")[SPLIT].nunique()
    shared = splits_per_patient[splits_per_patient > 1]
    fail(
        "patients in more than one split",
        len(shared),
        ({"patient_id": p, "problem": "in several splits"} for p in shared.index),
    )

    # --- time: every view proves its snapshot, and no snapshot is after the cutoff ------
    features = feature_columns(df)
    epoch_suffix = f"__{SNAPSHOT_EPOCH}"
    by_view: dict[str, list[str]] = {}
    for c in features:
        by_view.setdefault(c.split("__", 1)[0], []).append(c)
    epochs = [c for c in df.columns if "__" in c and c.endswith(epoch_suffix)]
    no_epoch = [v for v in by_view if f"{v}{epoch_suffix}" not in df.columns]
    fail(
        "views without a snapshot-epoch column",
        len(no_epoch),
        (
            {
                "view": v,
                "column": f"{v}{epoch_suffix}",
                "problem": "view's features present, snapshot epoch missing",
                "features": len(by_view[v]),
            }
            for v in no_epoch
        ),
    )

    cutoff_epoch = (df[CUTOFF] - pd.Timestamp("1970-01-01", tz="UTC")) // pd.Timedelta(seconds=1)
    failing = np.zeros(len(df), dtype=bool)
    late_rows, late_sample = 0, []
    unproven_rows, unproven_sample = 0, []
    for col in epochs:
        late = (df[col].notna() & (df[col] > cutoff_epoch)).to_numpy()
        late_rows += int(late.sum())
        late_sample += [
            {"row": int(i), "column": col, "problem": "feature snapshot after cutoff"}
            for i in df.index[late][:PER_KIND_SAMPLE]
        ]
        view_features = by_view.get(col[: -len(epoch_suffix)], [])
        if view_features:
            unproven = (df[view_features].notna().any(axis=1) & df[col].isna()).to_numpy()
            unproven_rows += int(unproven.sum())
            unproven_sample += [
                {"row": int(i), "column": col, "problem": "view's features without its epoch"}
                for i in df.index[unproven][:PER_KIND_SAMPLE]
            ]
            failing |= unproven
        failing |= late
    fail("feature values from after the row's cutoff", late_rows, late_sample)
    fail("rows with a view's features but no snapshot epoch", unproven_rows, unproven_sample)

    # --- splits: chronological, with the gap chronological_split leaves -----------------
    gap = pd.Timedelta(days=split_gap_days)
    pairs, missing_splits, split_cutoffs = _split_order(df)
    fail(
        "splits with no rows",
        len(missing_splits),
        ({"split": s, "problem": "no rows"} for s in missing_splits),
    )
    out_of_order = [p for p in pairs if p[1] > p[2]]
    too_close = [p for p in pairs if p[1] <= p[2] and p[3] < gap]

    def split_entry(pair, problem: str) -> dict:
        name, last, first, observed = pair
        return {
            "splits": name,
            "problem": problem,
            "last_cutoff": last.isoformat(),
            "next_first_cutoff": first.isoformat(),
            "observed_gap_days": observed / pd.Timedelta(days=1),
            "limit_gap_days": split_gap_days,
        }

    fail(
        "splits out of chronological order",
        len(out_of_order),
        (split_entry(p, "a cutoff later than the next split's first") for p in out_of_order),
    )
    fail(
        f"split gaps shorter than {split_gap_days} days",
        len(too_close),
        (split_entry(p, "gap between splits below the outcome window") for p in too_close),
    )

    # --- features, any dtype ------------------------------------------------------------
    label_derived = {c for cols in LABEL_DERIVED.values() for c in cols}
    derived = [c for c in features if c.split("__", 1)[1] in label_derived]
    fail(
        "label-derived feature columns",
        len(derived),
        ({"column": c, "problem": "label-derived by name"} for c in derived),
    )

    y = df[LABEL].to_numpy() == 1
    evidence = feature_evidence(df, features, y, max_text_singleton_share)
    fail(
        "all-null feature columns",
        len(evidence["all_null"]),
        (
            {"column": c, "problem": "null on every row", "observed_non_null": 0}
            for c in evidence["all_null"]
        ),
    )
    auc = pd.Series(evidence["auc"], dtype="float64").sort_values(ascending=False)
    null_auc = pd.Series(evidence["null_auc"], dtype="float64").sort_values(ascending=False)
    for name, values, problem in (
        (
            f"features with single-feature AUC > {max_single_feature_auc}",
            auc,
            "values alone rank the label",
        ),
        (
            f"features whose nulls predict the label (AUC > {max_single_feature_auc})",
            null_auc,
            "null pattern alone ranks the label",
        ),
    ):
        above = values[values > max_single_feature_auc]
        fail(
            name,
            len(above),
            (
                {
                    "column": c,
                    "problem": problem,
                    "observed_auc": round(float(v), 4),
                    "limit": max_single_feature_auc,
                }
                for c, v in above.items()
            ),
        )
    fail(
        "ID-like text feature columns",
        len(evidence["id_like"]),
        (
            {
                "column": c,
                "problem": "values mostly unique: cannot be scored out of fold",
                "observed_singleton_share": round(s, 4),
                "limit": max_text_singleton_share,
            }
            for c, s in evidence["id_like"].items()
        ),
    )

    prevalence = float(df[LABEL].mean()) if len(df) else float("nan")
    in_band = prevalence_min <= prevalence <= prevalence_max
    fail(
        "label prevalence outside band",
        0 if in_band else 1,
        [
            {
                "problem": "label prevalence outside band",
                "observed": round(prevalence, 6),
                "limit": [prevalence_min, prevalence_max],
            }
        ],
    )

    failed = {k: v for k, v in counts.items() if v}
    gaps = {name: observed / pd.Timedelta(days=1) for name, _, _, observed in pairs}
    top = auc.index[0] if len(auc) else None
    return gate_result(
        passed=not failed,
        blocking_failure=True,
        summary=("no leakage: " if not failed else "leakage: ")
        + (
            ", ".join(f"{k} ({v})" for k, v in failed.items())
            if failed
            else f"{len(df)} rows, prevalence {prevalence:.3f}, max single-feature AUC "
            f"{(auc.iloc[0] if len(auc) else 0.5):.3f}"
            + (f" ({top})" if top else "")
            + f", split gaps {', '.join(f'{d:g}' for d in gaps.values())} days "
            f"(>= {split_gap_days})"
        ),
        rows_checked=len(df),
        failing_rows=int(failing.sum()),
        failure_counts=failed,
        sample=sample[:SAMPLE_LIMIT],
        extra={
            "prevalence": round(prevalence, 6),
            "prevalence_band": [prevalence_min, prevalence_max],
            "max_single_feature_auc": round(float(auc.iloc[0]), 6) if len(auc) else 0.5,
            "single_feature_auc_limit": max_single_feature_auc,
            "single_feature_auc": {c: round(float(v), 4) for c, v in auc.items()},
            "max_null_pattern_auc": round(float(null_auc.iloc[0]), 6) if len(null_auc) else 0.5,
            "text_singleton_share": {
                c: round(s, 4) for c, s in evidence["singleton_share"].items()
            },
            "text_singleton_share_limit": max_text_singleton_share,
            "split_cutoffs": split_cutoffs,
            "split_gap_days": gaps,
            "split_gap_limit_days": split_gap_days,
            "snapshot_epoch_columns": epochs,
        },
    )
