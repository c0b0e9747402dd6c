"""Hyperparameter search for the discontinuation model: LightGBM tuned with Optuna.

Every boosting round reports the validation ROC-AUC to the trial, so the Hyperband
pruner compares trials at equal rounds and stops the weak ones early. A study is
named by what it searched (the training set's data version and this search's
settings): the same study is resumed, never duplicated, and a new one is warm
started from similar past studies (`warm_start.py`). Each finished trial is logged
to MLflow as a nested run by the objective's callback, and the time that takes is
measured so its share of the search is known.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from e2i_platform.training.model_data import ModelData

SEARCH_SPACE_VERSION = "lgbm-v1"
ALGORITHM = "lightgbm"
PROBLEM_TYPE = "binary_classification"
METRIC = "valid_auc"


def search_space() -> dict:
    from optuna.distributions import FloatDistribution, IntDistribution

    return {
        "learning_rate": FloatDistribution(0.01, 0.3, log=True),
        "num_leaves": IntDistribution(4, 128, log=True),
        "min_child_samples": IntDistribution(5, 200, log=True),
        "feature_fraction": FloatDistribution(0.4, 1.0),
        "bagging_fraction": FloatDistribution(0.4, 1.0),
        "lambda_l2": FloatDistribution(1e-3, 10.0, log=True),
    }


def suggest(trial, space: dict) -> dict:
    from optuna.distributions import FloatDistribution

    return {
        name: trial.suggest_float(name, d.low, d.high, log=d.log)
        if isinstance(d, FloatDistribution)
        else trial.suggest_int(name, d.low, d.high, log=d.log)
        for name, d in space.items()
    }


def booster_params(params: dict, seed: int) -> dict:
    """LightGBM parameters: deterministic (one thread, fixed seeds), quiet."""
    return {
        "objective": "binary",
        "metric": "auc",
        "verbosity": -1,
        "seed": seed,
        "deterministic": True,
        "force_col_wise": True,
        "num_threads": 1,
        "bagging_freq": 1,
        **params,
    }


@dataclass
class Fit:
    booster: object
    curve: list[tuple[int, float]]  # (round, validation ROC-AUC)
    best_iteration: int
    best_auc: float


def fit_booster(
    data: ModelData,
    params: dict,
    seed: int,
    rounds: int,
    early_stopping_rounds: int | None,
    on_round: Callable[[int, float], None] | None = None,
    init_model=None,
) -> Fit:
    """Train on the train split, evaluated on validation after every round; `on_round`
    (round, auc) may raise to stop (the pruner does)."""
    import lightgbm as lgb

    train = lgb.Dataset(
        data.X["train"], data.y["train"], categorical_feature=data.categorical or "auto"
    )
    valid = train.create_valid(data.X["validation"], data.y["validation"])
    curve: list[tuple[int, float]] = []

    def record(env) -> None:
        auc = next(r[2] for r in env.evaluation_result_list if r[1] == "auc")
        step = env.iteration + 1
        curve.append((step, float(auc)))
        if on_round is not None:
            on_round(step, float(auc))

    callbacks = [record]
    if early_stopping_rounds:
        callbacks.append(lgb.early_stopping(early_stopping_rounds, verbose=False))
    booster = lgb.train(
        booster_params(params, seed),
        train,
        num_boost_round=rounds,
        valid_sets=[valid],
        valid_names=["validation"],
        callbacks=callbacks,
        init_model=init_model,
    )
    # Continued training counts rounds from the initial model; the curve is this fit's.
    best = max(curve, key=lambda p: (p[1], -p[0])) if curve else (0, float("nan"))
    return Fit(booster, curve, best[0], best[1])


@dataclass
class TrialLog:
    """What the MLflow callback spent, so its share of the search can be reported."""

    seconds: float = 0.0
    runs: int = 0


def objective(data: ModelData, space: dict, seed: int, rounds: int, early_stopping_rounds: int):
    import optuna

    def run(trial) -> float:
        params = suggest(trial, space)

        def report(step: int, auc: float) -> None:
            trial.report(auc, step)
            if trial.should_prune():
                trial.set_user_attr("pruned_at_round", step)
                raise optuna.TrialPruned(f"pruned at round {step} (validation AUC {auc:.4f})")

        fit = fit_booster(data, params, seed, rounds, early_stopping_rounds, report)
        trial.set_user_attr("best_iteration", fit.best_iteration)
        return fit.best_auc

    return run


def mlflow_callback(mlflow, parent_run_id: str | None, log: TrialLog):
    """Log each finished trial as a nested MLflow run (params, every round's AUC, final)."""

    def callback(study, trial) -> None:
        if parent_run_id is None:
            return
        started = time.perf_counter()
        final = {}
        if trial.value is not None:
            final[METRIC] = trial.value
        if "best_iteration" in trial.user_attrs:
            final["best_iteration"] = trial.user_attrs["best_iteration"]
        mlflow.log_trial(
            parent_run_id,
            trial.number,
            trial.params,
            sorted(trial.intermediate_values.items()),
            final,
            trial.state.name,
        )
        log.seconds += time.perf_counter() - started
        log.runs += 1

    return callback


def best_trial(study):
    """The best COMPLETE trial with a finite value; ties go to fewer boosting rounds,
    then to the earlier trial. None when there is no such trial."""
    from optuna.trial import TrialState

    usable = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.value is not None and math.isfinite(t.value)
    ]
    if not usable:
        return None
    return min(
        usable,
        key=lambda t: (-t.value, t.user_attrs.get("best_iteration", math.inf), t.number),
    )


def trial_counts(study) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
    return counts


def logistic_baseline(data: ModelData, seed: int) -> dict:
    """A scaled, one-hot logistic regression on the same splits: the bar LightGBM must clear."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = [c for c in data.features if c not in data.categorical]
    prep = ColumnTransformer(
        [
            ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
            (
                "cat",
                make_pipeline(
                    SimpleImputer(strategy="most_frequent"),
                    OneHotEncoder(handle_unknown="ignore"),
                ),
                data.categorical,
            ),
        ]
    )
    model = make_pipeline(prep, LogisticRegression(max_iter=2000, random_state=seed))
    started = time.perf_counter()

    def as_text(X):
        out = X.copy()
        for c in data.categorical:
            out[c] = out[c].astype(object)
        return out

    model.fit(as_text(data.X["train"]), data.y["train"])
    score = model.predict_proba(as_text(data.X["validation"]))[:, 1]
    return {
        "algorithm": "logistic_regression",
        METRIC: round(float(roc_auc_score(data.y["validation"], score)), 6),
        "fit_seconds": round(time.perf_counter() - started, 3),
    }
