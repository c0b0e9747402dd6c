"""Hyperparameter search for the discontinuation model: LightGBM tuned with Optuna.

The validation ROC-AUC is measured after every boosting round and reported to the
trial at the rounds where the Hyperband pruner decides, so it compares trials at
equal rounds and stops the weak ones early; every round's value goes to MLflow. A study is
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


def boosting_datasets(data: ModelData) -> tuple:
    """LightGBM's binned train and validation sets, built once and reusable across fits:
    binning does not depend on the tuned parameters once features are not pre-filtered
    by `min_child_samples` (which a trial changes)."""
    import lightgbm as lgb

    params = {"feature_pre_filter": False, "verbosity": -1}
    train = lgb.Dataset(
        data.X["train"],
        data.y["train"],
        categorical_feature=data.categorical or "auto",
        params=params,
        free_raw_data=False,
    ).construct()
    valid = train.create_valid(data.X["validation"], data.y["validation"], params=params)
    return train, valid.construct()


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
    datasets: tuple | None = None,
) -> Fit:
    """Train on the train split, evaluated on validation after every round; `on_round`
    (round, auc) may raise to stop (the pruner does)."""
    import lightgbm as lgb

    train, valid = datasets or boosting_datasets(data)
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


class Objective:
    """The study's objective: one LightGBM fit per trial, its validation ROC-AUC after
    every round kept in `curves` (by trial number, for the trial's MLflow run) and
    reported to the trial at `report_rounds` (every round when None), where the
    pruner may stop it. `trial_attrs` are set on every trial it runs (which worker)."""

    def __init__(
        self,
        data: ModelData,
        space: dict,
        seed: int,
        rounds: int,
        early_stopping_rounds: int | None,
        report_rounds: frozenset[int] | None = None,
        trial_attrs: dict | None = None,
    ):
        self.data, self.space, self.seed = data, space, seed
        self.rounds, self.early_stopping_rounds = rounds, early_stopping_rounds
        self.report_rounds = report_rounds
        self.trial_attrs = trial_attrs or {}  # user attributes every trial gets (its worker)
        self.datasets = boosting_datasets(data)
        self.curves: dict[int, list[tuple[int, float]]] = {}

    def __call__(self, trial) -> float:
        import optuna

        for name, value in self.trial_attrs.items():
            trial.set_user_attr(name, value)
        params = suggest(trial, self.space)
        curve = self.curves.setdefault(trial.number, [])

        def report(step: int, auc: float) -> None:
            curve.append((step, auc))
            if self.report_rounds is not None and step not in self.report_rounds:
                return
            trial.report(auc, step)
            if trial.should_prune():
                trial.set_user_attr("pruned_at_round", step)
                raise optuna.TrialPruned(f"pruned at round {step} (validation AUC {auc:.4f})")

        fit = fit_booster(
            self.data,
            params,
            self.seed,
            self.rounds,
            self.early_stopping_rounds,
            report,
            datasets=self.datasets,
        )
        trial.set_user_attr("best_iteration", fit.best_iteration)
        return fit.best_auc


class TrialLog:
    """Logs each finished trial as a nested MLflow run (params, every round's AUC, final
    metrics) on a background thread, so the search does not wait for the tracking store.

    `callback` is the study's callback: it only copies the trial onto a queue. `close`
    waits until every queued trial is logged and raises the first logging error: a
    failed log fails the search, it is never dropped. `seconds` is the time the search
    itself spent on logging (the callbacks plus the final wait), which is what tracking
    adds to its wall time.
    """

    def __init__(self, mlflow=None, parent_run_id: str | None = None, curves: dict | None = None):
        import queue

        self.mlflow, self.parent = mlflow, parent_run_id
        self.curves = {} if curves is None else curves
        self.seconds = 0.0
        self.runs = 0
        self._queue: queue.Queue = queue.Queue()
        self._errors: list[tuple[int, BaseException]] = []
        self._thread = None

    def callback(self, study, trial) -> None:
        if self.parent is None:
            return
        import threading

        started = time.perf_counter()
        final = {}
        if trial.value is not None:
            final[METRIC] = trial.value
        if "best_iteration" in trial.user_attrs:
            final["best_iteration"] = trial.user_attrs["best_iteration"]
        self._queue.put(
            (
                trial.number,
                dict(trial.params),
                self.curves.pop(trial.number, []),
                final,
                trial.state.name,
            )
        )
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="mlflow-trials", daemon=True)
            self._thread.start()
        self.seconds += time.perf_counter() - started

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            number, params, intermediate, final, state = item
            try:
                self.mlflow.log_trial(self.parent, number, params, intermediate, final, state)
                self.runs += 1
            except Exception as e:  # reported by close(), with the trial it belongs to
                self._errors.append((number, e))

    def close(self, raise_errors: bool = True) -> None:
        if self._thread is None:
            return
        started = time.perf_counter()
        self._queue.put(None)
        self._thread.join()
        self._thread = None
        self.seconds += time.perf_counter() - started
        if self._errors and raise_errors:
            number, error = self._errors[0]
            raise RuntimeError(
                f"MLflow logging failed for {len(self._errors)} trial(s), first trial "
                f"{number}: {type(error).__name__}: {error}"
            ) from error


def best_trial(study):
    """The best COMPLETE trial this study evaluated, with a finite value; ties go to the
    earlier trial. This is the trial Optuna's own `Study.best_trial` (and so
    optuna-dashboard) shows: trials copied in by the warm start are PRUNED, which
    Optuna never ranks as best, and their values were measured on another study's
    data. Copies that studies seeded before then hold COMPLETE are skipped here too
    (`optuna_best_trial` in the study's record shows where Optuna then disagrees).
    None when there is no such trial."""
    from optuna.trial import TrialState

    from e2i_platform.training.warm_start import COPIED_FROM

    usable = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.value is not None and math.isfinite(t.value) and COPIED_FROM not in t.user_attrs
    ]
    if not usable:
        return None
    return min(usable, key=lambda t: (-t.value, t.number))


def optuna_best_trial_number(study) -> int | None:
    """The trial Optuna itself calls best (`Study.best_trial`), None when it has none."""
    try:
        return study.best_trial.number
    except ValueError:  # no COMPLETE trial ("Record does not exist." on RDB storage)
        return None


def trial_counts(study) -> dict[str, int]:
    """Trials by state; copies seeded by the warm start are counted apart
    (`warm_start_copy`), so `pruned` is what the pruner stopped here."""
    from e2i_platform.training.warm_start import COPIED_FROM

    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        key = "warm_start_copy" if COPIED_FROM in t.user_attrs else t.state.name.lower()
        counts[key] = counts.get(key, 0) + 1
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
