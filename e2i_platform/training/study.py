"""One hyperparameter search, end to end: name the study, reuse / resume / warm start
it, run the remaining trials, pick the best, and say what happened.

The study name is the search's identity: a hash of the training set's data version,
the search settings and the search-space version. With the same identity the study
is reused when it has all its trials and resumed when it has fewer; `force_new`
starts a numbered sibling (which the warm start then finds as a perfect match).
The name, sampler and pruner come from `training.study_setup`; the storage and the
handling of trials whose process stopped from `training.study_storage`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from e2i_platform.lib.urls import redact_uri
from e2i_platform.training.hpo import (
    ALGORITHM,
    METRIC,
    PROBLEM_TYPE,
    SEARCH_SPACE_VERSION,
    Objective,
    TrialLog,
    best_trial,
    search_space,
    trial_counts,
)
from e2i_platform.training.model_data import ModelData
from e2i_platform.training.study_setup import (
    make_pruner,
    make_sampler,
    pruning_rounds,
    study_identity,
    study_name,
)
from e2i_platform.training.study_storage import (
    StaleTrials,
    ensure_storage,
    fail_stale_trials,
    stale_failed_trials,
)

# Trial failures that are about the trial's parameters, not the platform: recorded as
# FAIL (visible in counts and MLflow), never chosen as best. Anything else propagates.
TRIAL_ERRORS: tuple[type[BaseException], ...] = (ValueError, ArithmeticError)


@dataclass
class StudyOutcome:
    record: dict  # what hpo_study stores and shows
    study: object


def run_study(
    data: ModelData,
    cfg,
    storage_url: str,
    dataset_version: str,
    seed: int,
    mlflow=None,
    force_new: bool = False,
    n_trials: int | None = None,
    storage_shown: str | None = None,
) -> StudyOutcome:
    """Run (or reuse, or resume) the study; `storage_shown` is how the record names the
    storage (default: `storage_url`), always without credentials."""
    import optuna

    from e2i_platform.training.dataset_fingerprint import FINGERPRINT_ATTR, dataset_fingerprint
    from e2i_platform.training.hpo import optuna_best_trial_number
    from e2i_platform.training.tuning_sample import tuning_sample
    from e2i_platform.training.warm_start import COPIED_FROM, warm_start

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = time.perf_counter()
    stale = StaleTrials(cfg.heartbeat_grace_s)
    storage = ensure_storage(storage_url, cfg.heartbeat_interval_s, cfg.heartbeat_grace_s, stale)
    identity = study_identity(dataset_version, cfg)
    name = study_name(storage, cfg, identity, force_new)
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        direction="maximize",
        sampler=make_sampler(cfg),
        pruner=make_pruner(cfg),
        load_if_exists=True,
    )
    if study.metric_names != [METRIC]:  # named, so optuna-dashboard says what is maximized
        study.set_metric_names([METRIC])
    fail_stale_trials(study)  # trials a stopped process left RUNNING end FAIL, recorded
    data, sample = tuning_sample(data, cfg.tuning_sample.max_train_rows, cfg.tuning_sample.seed)
    space = search_space()
    target = n_trials or cfg.n_trials
    finished = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]

    if not study.get_trials(deepcopy=False):
        current = dataset_fingerprint(
            data.X["train"],
            data.y["train"],
            ALGORITHM,
            PROBLEM_TYPE,
            SEARCH_SPACE_VERSION,
            sampled_from_rows=sample.get("rows_of_full_data", {}).get("train"),
        )
        study.set_user_attr(FINGERPRINT_ATTR, current.as_dict())
        study.set_user_attr("tuning_sample", sample)
        study.set_user_attr("identity", identity)
        plan = warm_start(
            study, storage, current, cfg.warm_start, space, final_step=cfg.max_boost_rounds
        ).as_metadata()
    else:
        plan = study.user_attrs.get("warm_start", {"mode": "unknown", "summary": "not recorded"})
    seeded = sum(1 for t in finished if COPIED_FROM in t.user_attrs)
    # A trial failed because its process stopped was not evaluated: it is run again.
    crashed = len(stale_failed_trials(study))
    evaluated = len(finished) - seeded - crashed
    remaining = max(0, target - evaluated)
    decision = "reused" if remaining == 0 else ("resumed" if evaluated + crashed else "new")

    before = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
    log = TrialLog()  # replaced when trials run; empty when the study is reused
    parent = None
    baseline = study.user_attrs.get("baseline")
    if remaining:
        if baseline is None:
            from e2i_platform.training.hpo import logistic_baseline

            baseline = logistic_baseline(data, seed)
            study.set_user_attr("baseline", baseline)
        if mlflow is not None:
            parent = mlflow.start_study_run(
                name,
                params={"n_trials": target, "search_space": SEARCH_SPACE_VERSION, "seed": seed},
                tags={"optuna.study": name, "optuna.decision": decision},
            )
        run_trial = Objective(
            data,
            space,
            seed,
            cfg.max_boost_rounds,
            cfg.early_stopping_rounds,
            report_rounds=pruning_rounds(cfg),
        )
        log = TrialLog(mlflow, parent, run_trial.curves)
        try:
            study.optimize(
                run_trial,
                n_trials=remaining,
                timeout=cfg.timeout_s,
                catch=TRIAL_ERRORS,
                callbacks=[log.callback],
            )
        except BaseException:
            log.close(raise_errors=False)
            raise
        log.close()
    ran_now = sum(
        1
        for t in study.get_trials(deepcopy=False)
        if t.state.is_finished() and t.number not in before
    )
    best = best_trial(study)
    if best is None:
        if parent is not None:
            mlflow.end_run(parent, status="FAILED")
        raise RuntimeError(
            f"hpo_study {name}: no trial completed with a finite {METRIC} "
            f"(trials: {trial_counts(study)})"
        )
    elapsed = time.perf_counter() - started
    if parent is not None:
        if stale.failed:  # shown on the study's MLflow run too, not only in Optuna
            mlflow.set_tags(
                parent, {"optuna.heartbeat_failed_trials": ",".join(map(str, stale.failed))}
            )
        mlflow.log_metrics(
            parent,
            {
                f"best_{METRIC}": best.value,
                f"baseline_logreg_{METRIC}": baseline[METRIC],
                "mlflow_seconds": log.seconds,
            },
        )
        mlflow.end_run(parent)
    record = {
        "study_name": name,
        "storage": redact_uri(storage_shown or storage_url),
        "identity": identity,
        "decision": decision,
        "trials_run_now": ran_now,
        "trials": trial_counts(study),
        "best_trial": best.number,
        # What `optuna.load_study(...).best_trial` and optuna-dashboard show: the same
        # trial, unless the study holds COMPLETE warm-start copies from before copies
        # were added as PRUNED (then the platform's choice, which skips them, stands).
        "optuna_best_trial": optuna_best_trial_number(study),
        "metric_names": study.metric_names,
        "heartbeat": {
            "interval_s": cfg.heartbeat_interval_s,
            "grace_s": cfg.heartbeat_grace_s,
            "failed_now": sorted(stale.failed),
            "failed_trials": stale_failed_trials(study),
        },
        f"best_{METRIC}": best.value,
        "best_params": best.params,
        "best_iteration": int(best.user_attrs.get("best_iteration", cfg.max_boost_rounds)),
        "baseline": baseline,
        "warm_start": plan,
        "tuning_sample": sample,
        "search_space_version": SEARCH_SPACE_VERSION,
        "seconds": round(elapsed, 3),
        "mlflow": {
            "study_run_id": parent,
            "trial_runs_logged_now": log.runs,
            "logging_seconds": round(log.seconds, 3),
            "share_of_search": round(log.seconds / elapsed, 4) if elapsed else 0.0,
        },
    }
    return StudyOutcome(record, study)
