"""Single-feature predictive power for any dtype: how well one column alone ranks the
label (the `no_leakage` gate's test for label copies).

Numeric, bool and datetime values are the scores themselves (max(AUC, 1 - AUC), ties
averaged, non-null rows only). Text and category features are scored by their
per-category label rate, computed out of fold over the same non-null rows (5 folds,
grouped by patient, smoothed toward the other folds' prevalence) and ranked within
each held-out fold, so a category is never scored with its own row's label and a value
seen in no other fold carries no signal. A text feature whose values are mostly
singletons cannot be scored that way: it is reported as ID-like.
"""

FOLDS = 5  # out-of-fold category rates
RATE_SMOOTHING = 1.0  # pseudo-rows at the prevalence added to each category's rate


def _single_feature_auc(values, y, positive_direction_only: bool):
    """ROC-AUC of one score vector (NaN = not scored) against boolean labels; NaN when the
    scored rows hold only one class. Mann-Whitney on average ranks (ties count half),
    ranked per distinct value: fast for the few distinct values of counts and rates."""
    import numpy as np
    import pandas as pd

    scored = ~np.isnan(values)
    y_scored = y[scored]
    n1 = int(y_scored.sum())
    n0 = len(y_scored) - n1
    if not n1 or not n0:
        return float("nan")
    codes, _ = pd.factorize(values[scored], sort=True)
    per_value = np.bincount(codes).astype("float64")
    positives = np.bincount(codes, weights=y_scored.astype("float64"))
    average_rank = np.cumsum(per_value) - (per_value - 1) / 2
    auc = ((positives * average_rank).sum() - n1 * (n1 + 1) / 2) / (n1 * n0)
    return float(auc) if positive_direction_only else float(max(auc, 1.0 - auc))


def _null_pattern_auc(is_null, y) -> float:
    """max(AUC, 1 - AUC) of the 0/1 null indicator: 0.5 * (1 + TPR - FPR) for a binary score;
    NaN when the label holds only one class."""
    if y.all() or not y.any():
        return float("nan")
    tpr = is_null[y].mean()
    fpr = is_null[~y].mean()
    auc = 0.5 * (1.0 + tpr - fpr)
    return float(max(auc, 1.0 - auc))


def _numeric_scores(column):
    """Numeric, bool and datetime values as float scores (NaN where null); None for text."""
    import numpy as np
    import pandas as pd

    dtype = column.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return None
    if pd.api.types.is_datetime64_any_dtype(dtype) or pd.api.types.is_timedelta64_dtype(dtype):
        if isinstance(dtype, pd.DatetimeTZDtype):
            column = column.dt.tz_convert(None)
        out = column.to_numpy().view("i8").astype("float64")
        out[column.isna().to_numpy()] = np.nan
        return out
    if pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_numeric_dtype(dtype):
        return column.astype("float64").to_numpy()
    return None


def _category_codes(column):
    import pandas as pd

    try:
        codes, uniques = pd.factorize(column)
    except TypeError:  # unhashable values (lists, dicts): compare their text
        codes, uniques = pd.factorize(column.astype(str).where(column.notna()))
    return codes, len(uniques)


def _out_of_fold_rates(codes, n_categories: int, y, fold):
    """Each non-null row's category label rate over the other folds (NaN where null)."""
    import numpy as np

    out = np.full(len(codes), np.nan)
    ok = codes >= 0
    c, f, yk = codes[ok], fold[ok], y[ok].astype("float64")
    if not len(c):
        return out
    key = c * FOLDS + f
    size = n_categories * FOLDS
    pos = np.bincount(key, weights=yk, minlength=size).reshape(n_categories, FOLDS)
    cnt = np.bincount(key, minlength=size).reshape(n_categories, FOLDS).astype("float64")
    fold_pos = pos.sum(axis=0)
    fold_cnt = cnt.sum(axis=0)
    other_cnt = fold_cnt.sum() - fold_cnt[f]
    prior = np.divide(
        fold_pos.sum() - fold_pos[f], other_cnt, out=np.full(len(c), 0.5), where=other_cnt > 0
    )
    oof_pos = pos.sum(axis=1)[c] - pos[c, f]
    oof_cnt = cnt.sum(axis=1)[c] - cnt[c, f]
    out[ok] = (oof_pos + RATE_SMOOTHING * prior) / (oof_cnt + RATE_SMOOTHING)
    return out


def _cross_validated_auc(rates, y, fold) -> float:
    """AUC of out-of-fold rates, ranked within each held-out fold (all its rows scored by
    the same other folds) and averaged by rows: pooled across folds, every label-1 row
    would raise its category's rate for the other folds' label-0 rows and bias the AUC
    below 0.5. Oriented: a lower rate for label-1 rows is no leak."""
    import numpy as np

    aucs, weights = [], []
    for k in range(FOLDS):
        held_out = fold == k
        auc = _single_feature_auc(rates[held_out], y[held_out], positive_direction_only=True)
        if not np.isnan(auc):
            aucs.append(auc)
            weights.append(int((held_out & ~np.isnan(rates)).sum()))
    return float(np.average(aucs, weights=weights)) if aucs else float("nan")


def _folds(df):
    """A fold per row, one fold per patient (so a patient's label never scores its own
    other rows), assigned by a fixed seed."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    if "patient_id" in df.columns:
        groups, uniques = pd.factorize(df["patient_id"], use_na_sentinel=False)
        return rng.permutation(len(uniques))[groups] % FOLDS
    return rng.permutation(len(df)) % FOLDS


def feature_evidence(df, features, y, max_text_singleton_share: float) -> dict:
    """Per feature: all-null, single-feature AUC, null-pattern AUC, ID-like share."""
    import numpy as np

    out: dict = {"all_null": [], "auc": {}, "null_auc": {}, "singleton_share": {}}
    fold = None
    for column in features if len(df) else ():  # no rows: nothing to judge a feature by
        values = df[column]
        is_null = values.isna().to_numpy()
        if is_null.all():
            out["all_null"].append(column)
            continue
        null_auc = _null_pattern_auc(is_null, y) if is_null.any() else float("nan")
        if not np.isnan(null_auc):
            out["null_auc"][column] = null_auc
        scores = _numeric_scores(values)
        if scores is not None:
            auc = _single_feature_auc(scores, y, positive_direction_only=False)
        else:
            codes, n_categories = _category_codes(values)
            per_category = np.bincount(codes[codes >= 0], minlength=n_categories)
            share = float(per_category[per_category == 1].sum() / (codes >= 0).sum())
            out["singleton_share"][column] = share
            fold = _folds(df) if fold is None else fold
            rates = _out_of_fold_rates(codes, n_categories, y, fold)
            auc = _cross_validated_auc(rates, y, fold)
        if not np.isnan(auc):
            out["auc"][column] = auc
    out["id_like"] = {
        c: s for c, s in out["singleton_share"].items() if s > max_text_singleton_share
    }
    return out
