"""One hyperparameter search, end to end: name the study, reuse / resume / warm start
it, run the remaining trials, pick the best, and say what happened.

The study name is the search's identity: a hash of the training set's data version,
the search settings and the search-space version. With the same identity the study
is reused when it has all its trials and resumed when it has fewer; `force_new`
starts a numbered sibling (which the warm start then finds as a perfect match).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

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

# Trial failures that are about the trial's parameters, not the platform: recorded as
# FAIL (visible in counts and MLflow), never chosen as best. Anything else propagates.
TRIAL_ERRORS: tuple[type[BaseException], ...] = (ValueError, ArithmeticError)


# Study user attribute (one per trial, so parallel workers never overwrite each other)
# recording a trial failed because its process stopped sending heartbeats.
STALE_ATTR_PREFIX = "heartbeat_failed_trial_"


class StaleTrials:
    """The storage's heartbeat-stale callback: Optuna calls it for every RUNNING trial it
    fails because its process stopped sending heartbeats (a crash, a kill). It records
    the trial on the study (`heartbeat_failed_trial_<n>`, visible in optuna-dashboard
    and read by later runs) and keeps the numbers this process failed in `failed`."""

    def __init__(self, grace_s: int):
        self.grace_s = grace_s
        self.failed: list[int] = []

    def __call__(self, study, trial) -> None:
        study.set_user_attr(
            f"{STALE_ATTR_PREFIX}{trial.number}",
            {
                "reason": f"RUNNING with no heartbeat for more than {self.grace_s} s: "
                "its process stopped; failed by Optuna's heartbeat check",
                "started": trial.datetime_start.isoformat() if trial.datetime_start else None,
            },
        )
        self.failed.append(trial.number)


def stale_failed_trials(study) -> list[int]:
    """Numbers of the study's trials failed because their process stopped."""
    return sorted(
        int(k.removeprefix(STALE_ATTR_PREFIX))
        for k in study.user_attrs
        if k.startswith(STALE_ATTR_PREFIX)
    )


def ensure_storage(
    url: str,
    heartbeat_interval_s: int | None = None,
    heartbeat_grace_s: int | None = None,
    on_stale: StaleTrials | None = None,
):
    """An Optuna storage for `url`; a local SQLite file gets its directory created.

    With `heartbeat_interval_s`, every running trial's process writes a heartbeat that
    often, and a RUNNING trial silent for more than `heartbeat_grace_s` is failed (FAIL)
    when any process starts a trial of its study (`on_stale` is told), instead of
    staying RUNNING forever after a crash."""
    import warnings

    import optuna

    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    if heartbeat_interval_s is None:
        return optuna.storages.RDBStorage(url)
    grace = heartbeat_grace_s if heartbeat_grace_s is not None else 2 * heartbeat_interval_s
    if grace <= heartbeat_interval_s:
        raise ValueError(
            f"optuna heartbeat_grace_s ({grace}) must be greater than heartbeat_interval_s "
            f"({heartbeat_interval_s}): a live trial would be failed between two heartbeats"
        )
    with warnings.catch_warnings():
        # The heartbeat arguments are marked experimental; using them is deliberate.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url,
            heartbeat_interval=heartbeat_interval_s,
            grace_period=grace,
            heartbeat_stale_trial_callback=on_stale,
        )


def fail_stale_trials(study) -> None:
    """Fail the study's RUNNING trials whose heartbeat stopped (what Optuna also does
    before each new trial), so a reused study is cleaned up too."""
    import warnings

    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def make_sampler(cfg):
    import optuna

    return optuna.samplers.TPESampler(
        seed=cfg.sampler.seed, n_startup_trials=cfg.sampler.n_startup_trials
    )


def make_pruner(cfg):
    import optuna

    return optuna.pruners.HyperbandPruner(
        min_resource=cfg.pruner.min_resource,
        max_resource=cfg.max_boost_rounds,
        reduction_factor=cfg.pruner.reduction_factor,
    )


def pruning_rounds(cfg) -> frozenset[int]:
    """The boosting rounds at which the pruner decides. Every Hyperband bracket promotes
    at min_resource * reduction_factor**k rounds, so reporting only there gives the
    decisions (and, since TPE ranks pruned trials by their last report, the search)
    that reporting every round gives, with a tenth of the storage writes: at the
    default size those writes were 60% of the search on SQLite."""
    rounds, step = set(), cfg.pruner.min_resource
    while step <= cfg.max_boost_rounds:
        rounds.add(step)
        step *= cfg.pruner.reduction_factor
    return frozenset(rounds)


def study_identity(dataset_version: str, cfg) -> str:
    from e2i_platform.training.runs import fingerprint

    # How trials are stored and watched is not what was searched.
    search = cfg.model_dump(
        exclude={
            "storage",
            "warm_start",
            "study_prefix",
            "heartbeat_interval_s",
            "heartbeat_grace_s",
        }
    )
    return fingerprint(
        {"dataset": dataset_version, "search": search, "space": SEARCH_SPACE_VERSION}
    )


def study_name(storage, cfg, identity: str, force_new: bool) -> str:
    import optuna

    base = f"{cfg.study_prefix}-{identity[:12]}"
    if not force_new:
        return base
    existing = set(optuna.get_all_study_names(storage))
    n = 2
    while f"{base}.{n}" in existing:
        n += 1
    return f"{base}.{n}"


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

    from e2i_platform.training.hpo import optuna_best_trial_number
    from e2i_platform.training.tuning_sample import tuning_sample
    from e2i_platform.training.warm_start import (
        COPIED_FROM,
        FINGERPRINT_ATTR,
        dataset_fingerprint,
        warm_start,
    )

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
