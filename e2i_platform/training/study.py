"""One hyperparameter search, end to end: name the study, reuse / resume / warm start
it, run the remaining trials, pick the best, and say what happened.

The study name is the search's identity: a hash of the training set's data version,
the search settings and the search-space version. With the same identity the study
is reused when it has all its trials and resumed when it has fewer; `force_new`
starts a numbered sibling (which the warm start then finds as a perfect match).
The name, sampler and pruner come from `training.study_setup`; the storage and the
handling of trials whose process stopped from `training.study_storage`.

A search is three parts, so that its trials can run in several processes at once
(`hpo_study`'s parallel trial slots, `training.hpo_graph`):

- `prepare_study` opens (creates, resumes, warm starts) the study, decides how many
  trials are still to run and issues them as tickets (`training.study_budget`), starts
  the study's MLflow run and returns a `StudyPlan`;
- `run_slot` runs ticketed trials of the plan in one process until none is left,
  each trial logged as a nested MLflow run under the plan's study run; any number of
  slots may run at once, on one study in one RDB storage;
- `collect_study` reads the study once the slots are done: the best trial, the counts
  and the record `hpo_study` stores.

`run_study` is the three in a row, in this process: one slot.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field

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
from e2i_platform.training.study_budget import (
    BudgetSpent,
    budgeted_study,
    issue_tickets,
    replaced_tickets,
)
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

__all__ = [
    "TRIAL_ERRORS",
    "StudyOutcome",
    "StudyPlan",
    "collect_study",
    "make_pruner",  # bench/hpo.py imports these two from here
    "make_sampler",
    "prepare_study",
    "run_slot",
    "run_study",
]

# Trial failures that are about the trial's parameters, not the platform: recorded as
# FAIL (visible in counts and MLflow), never chosen as best. Anything else propagates.
TRIAL_ERRORS: tuple[type[BaseException], ...] = (ValueError, ArithmeticError)

# User attribute of every trial run here: which slot (and process, host) ran it.
WORKER_ATTR = "worker"


@dataclass
class StudyOutcome:
    record: dict  # what hpo_study stores and shows
    study: object


@dataclass
class StudyPlan:
    """What `prepare_study` decided; all a slot and `collect_study` need besides the data
    and the storage URL (which stays out of it: it may hold a password)."""

    study_name: str
    identity: str
    decision: str  # new | resumed | reused
    target: int  # the study's trial budget (trials evaluated on this data)
    tickets: list[int]  # numbers of the trials this run may run (`study_budget`)
    finished_before: int  # finished trials when the run started
    warm_start: dict
    tuning_sample: dict
    baseline: dict | None
    study_run_id: str | None  # the MLflow run every trial's run nests under
    started_at: float  # epoch seconds: the search's wall clock spans processes
    deadline: float | None  # epoch seconds after which no slot starts a trial
    stale_failed: list[int] = field(default_factory=list)  # failed by prepare's heartbeat check

    @property
    def trials_to_run(self) -> int:
        return len(self.tickets)


def _storage(url: str, cfg, stale: StaleTrials | None = None):
    return ensure_storage(url, cfg.heartbeat_interval_s, cfg.heartbeat_grace_s, stale)


def prepare_study(
    data: ModelData,
    cfg,
    storage_url: str,
    dataset_version: str,
    seed: int,
    mlflow=None,
    force_new: bool = False,
    n_trials: int | None = None,
) -> StudyPlan:
    """Open the study (create, resume or reuse it; warm start a new one), fail trials a
    stopped process left RUNNING, compute the logistic baseline, issue the trials still
    to run as tickets and start the study's MLflow run when there are any."""
    import optuna

    from e2i_platform.training.dataset_fingerprint import FINGERPRINT_ATTR, dataset_fingerprint
    from e2i_platform.training.tuning_sample import tuning_sample
    from e2i_platform.training.warm_start import COPIED_FROM, warm_start

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = time.time()
    stale = StaleTrials(cfg.heartbeat_grace_s)
    storage = _storage(storage_url, cfg, stale)
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
    target = n_trials or cfg.n_trials

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
            study, storage, current, cfg.warm_start, search_space(), final_step=cfg.max_boost_rounds
        ).as_metadata()
    else:
        plan = study.user_attrs.get("warm_start", {"mode": "unknown", "summary": "not recorded"})
    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state.is_finished()]
    seeded = sum(1 for t in finished if COPIED_FROM in t.user_attrs)
    # A trial failed because its process stopped was not evaluated: it is run again. So
    # is a dead ticket a run replaced (its replacement is counted, once it finished).
    crashed = len({*stale_failed_trials(study), *(r["ticket"] for r in replaced_tickets(trials))})
    evaluated = len(finished) - seeded - crashed
    # Trials another run's workers are running now count as spent: they finish there.
    running = sum(1 for t in trials if t.state.name == "RUNNING")
    remaining = max(0, target - evaluated - running)
    decision = "reused" if remaining == 0 else ("resumed" if evaluated + crashed else "new")

    parent = None
    tickets: list[int] = []
    baseline = study.user_attrs.get("baseline")
    if remaining:
        if baseline is None:
            from e2i_platform.training.hpo import logistic_baseline

            baseline = logistic_baseline(data, seed)
            study.set_user_attr("baseline", baseline)
        tickets = issue_tickets(study, remaining)
        if mlflow is not None:
            parent = mlflow.start_study_run(
                name,
                params={"n_trials": target, "search_space": SEARCH_SPACE_VERSION, "seed": seed},
                tags={"optuna.study": name, "optuna.decision": decision},
            )
    now = time.time()
    return StudyPlan(
        study_name=name,
        identity=identity,
        decision=decision,
        target=target,
        tickets=tickets,
        finished_before=len(finished),
        warm_start=plan,
        tuning_sample=sample,
        baseline=baseline,
        study_run_id=parent,
        started_at=started,
        deadline=now + cfg.timeout_s if cfg.timeout_s else None,
        stale_failed=sorted(stale.failed),
    )


def run_slot(
    data: ModelData,
    cfg,
    storage_url: str,
    plan: StudyPlan,
    seed: int,
    slot: int = 0,
    mlflow=None,
    label: str | None = None,
) -> dict:
    """Run the plan's ticketed trials in this process until none is left waiting (or the
    plan's deadline passes); other slots may claim tickets at the same time. Every trial
    records which slot ran it (`worker`: slot label, pid, host) and, with MLflow, is a
    nested run under the plan's study run. Returns what this slot did."""
    import optuna

    from e2i_platform.training.tuning_sample import tuning_sample

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started, cpu_started = time.time(), time.process_time()
    label = label or f"slot_{slot}"
    result = {
        "slot": label,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "trials": [],
        "seconds": 0.0,
        "cpu_seconds": 0.0,  # of this process: below `seconds` when it waited for a core
        "mlflow_runs": 0,
        "mlflow_seconds": 0.0,
        "stale_failed": [],
        "replaced": [],  # dead tickets (of slots that died) this slot replaced and ran
    }
    if not plan.tickets:
        return result
    data, sample = tuning_sample(data, cfg.tuning_sample.max_train_rows, cfg.tuning_sample.seed)
    if sample != plan.tuning_sample:
        raise RuntimeError(
            f"hpo_study {plan.study_name}, {label}: the training data differ from the data "
            f"the study was prepared on (tuning sample {sample} != {plan.tuning_sample}); "
            "the training set changed during the run: materialize hpo_study again"
        )
    stale = StaleTrials(cfg.heartbeat_grace_s)
    study = budgeted_study(
        plan.tickets,
        label=label,
        deadline=plan.deadline,
        study_name=plan.study_name,
        storage=_storage(storage_url, cfg, stale),
        sampler=make_sampler(cfg, slot),
        pruner=make_pruner(cfg),
    )
    run_trial = Objective(
        data,
        search_space(),
        seed,
        cfg.max_boost_rounds,
        cfg.early_stopping_rounds,
        report_rounds=pruning_rounds(cfg),
        trial_attrs={WORKER_ATTR: {"slot": label, "pid": result["pid"], "host": result["host"]}},
    )
    log = TrialLog(mlflow, plan.study_run_id, run_trial.curves)

    def ran(_study, trial) -> None:
        result["trials"].append(trial.number)

    timeout = None if plan.deadline is None else max(0.0, plan.deadline - time.time())
    try:
        study.optimize(
            run_trial, timeout=timeout, catch=TRIAL_ERRORS, callbacks=[ran, log.callback]
        )
    except BudgetSpent:
        pass  # every ticket is run or replaced: this slot's share of the budget is done
    except BaseException:
        log.close(raise_errors=False)
        raise
    log.close()
    result.update(
        seconds=round(time.time() - started, 3),
        cpu_seconds=round(time.process_time() - cpu_started, 3),
        mlflow_runs=log.runs,
        mlflow_seconds=round(log.seconds, 3),
        stale_failed=sorted(stale.failed),
        replaced=study.replaced,
    )
    return result


def collect_study(
    cfg,
    storage_url: str,
    plan: StudyPlan,
    slots: list[dict],
    mlflow=None,
    storage_shown: str | None = None,
) -> StudyOutcome:
    """The study after its slots: its best trial, counts and the record `hpo_study`
    stores; the study's MLflow run gets the best and baseline values and ends."""
    import optuna

    from e2i_platform.training.hpo import optuna_best_trial_number

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=plan.study_name, storage=ensure_storage(storage_url))
    finished_now = sum(1 for t in study.get_trials(deepcopy=False) if t.state.is_finished())
    parent = plan.study_run_id
    best = best_trial(study)
    if best is None:
        if parent is not None:
            mlflow.end_run(parent, status="FAILED")
        raise RuntimeError(
            f"hpo_study {plan.study_name}: no trial completed with a finite {METRIC} "
            f"(trials: {trial_counts(study)})"
        )
    elapsed = time.time() - plan.started_at
    failed_now = sorted({*plan.stale_failed, *(n for s in slots for n in s["stale_failed"])})
    # This run's tickets whose slot died, each run again as a new trial (`study_budget`).
    replaced = replaced_tickets(study.get_trials(deepcopy=False), plan.tickets)
    log_seconds = sum(s["mlflow_seconds"] for s in slots)
    if parent is not None:
        if failed_now:  # shown on the study's MLflow run too, not only in Optuna
            mlflow.set_tags(
                parent, {"optuna.heartbeat_failed_trials": ",".join(map(str, failed_now))}
            )
        if replaced:
            mlflow.set_tags(
                parent,
                {
                    "optuna.replaced_tickets": ",".join(
                        f"{r['ticket']}->{r['replacement']}" for r in replaced
                    )
                },
            )
        mlflow.log_metrics(
            parent,
            {
                f"best_{METRIC}": best.value,
                f"baseline_logreg_{METRIC}": plan.baseline[METRIC],
                "mlflow_seconds": log_seconds,
            },
        )
        mlflow.end_run(parent)
    busy = max(1, len(slots)) * elapsed  # slot-seconds the search had
    record = {
        "study_name": plan.study_name,
        "storage": redact_uri(storage_shown or storage_url),
        "identity": plan.identity,
        "decision": plan.decision,
        "trials_run_now": finished_now - plan.finished_before,
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
            "failed_now": failed_now,
            "failed_trials": stale_failed_trials(study),
        },
        "replaced_tickets": replaced,
        f"best_{METRIC}": best.value,
        "best_params": best.params,
        "best_iteration": int(best.user_attrs.get("best_iteration", cfg.max_boost_rounds)),
        "baseline": plan.baseline,
        "warm_start": plan.warm_start,
        "tuning_sample": plan.tuning_sample,
        "search_space_version": SEARCH_SPACE_VERSION,
        "seconds": round(elapsed, 3),
        # Who ran this run's trials: one entry per trial slot (none when reused).
        "workers": {
            "slots": len(slots),
            "tickets": len(plan.tickets),
            "per_slot": [
                {k: s[k] for k in ("slot", "pid", "host", "seconds", "cpu_seconds")}
                | {"trials": len(s["trials"])}
                for s in slots
            ],
        },
        "mlflow": {
            "study_run_id": parent,
            "trial_runs_logged_now": sum(s["mlflow_runs"] for s in slots),
            "logging_seconds": round(log_seconds, 3),
            "share_of_search": round(log_seconds / busy, 4) if busy else 0.0,
        },
    }
    return StudyOutcome(record, study)


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
    """Run (or reuse, or resume) the study in this process, in one slot; `storage_shown`
    is how the record names the storage (default: `storage_url`), always without
    credentials."""
    plan = prepare_study(data, cfg, storage_url, dataset_version, seed, mlflow, force_new, n_trials)
    slots = [run_slot(data, cfg, storage_url, plan, seed, 0, mlflow)] if plan.tickets else []
    return collect_study(cfg, storage_url, plan, slots, mlflow, storage_shown)
