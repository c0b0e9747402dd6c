"""The steps of `hpo_study`: prepare the study, run its trials in parallel slots, collect.

`hpo_study` is a graph-backed asset (`training.assets`)::

    training_dataset ─┬─> prepare_study ──plan──────────────────────────> collect_study ─> hpo_study
                      │        └─slots (DynamicOutput × N)─> trial_slot[slot_i] ─┘
                      └──────────────────────────────────────────^

- `prepare_study` opens, resumes or warm starts the study, decides the trials still to
  run and issues them as tickets (`training.study_budget`), starts the study's MLflow
  run and yields one dynamic output per trial slot: `optuna.parallel_workers` (or the
  Launchpad's `parallel_workers`), never more slots than trials to run, none when the
  study is reused.
- each `trial_slot[slot_i]` is its own step: with the multiprocess executor a child
  process, with Celery a task any worker on any machine may take. It loads the
  training set, checks it is the one the study was prepared on, and runs ticketed
  trials (LightGBM on one thread each) against the same RDB study until no ticket is
  left, so the slots share the work however long each trial takes and the study ends
  with exactly its budget. Each trial records the slot (step key), pid and host that
  ran it, and is logged as a nested MLflow run under the study run whose id the plan
  carries (MLflow parents by run id, so trials from any process nest correctly).
  A slot that dies mid-trial (its process killed, its Celery worker lost) leaves its
  ticket RUNNING until the storage heartbeat fails it; a slot of the same run (a
  sibling waiting for the run's last trials, or the dead slot's retry) then replaces it
  with a new trial, once (`study_budget.replace`), so the budget stays exact; the
  replacement is logged and listed in `replaced_tickets`.
- `collect_study` reads the finished study and produces the record and metadata
  `hpo_study` always had; `trained_model` reads it unchanged.

Why a graph-backed asset with dynamic outputs, and not one step that starts worker
processes itself (an op-level design): Dagster then places and watches every worker.
The slots are steps the executor schedules (its `max_concurrent` caps them), Celery
spreads them over machines, each has its own logs, retries and failure in the UI, and
a failed slot fails the run visibly instead of dying inside another step. Dagster
1.13 supports `DynamicOutput` inside `@graph_asset` (fan-out, then `.collect()`; zero
slots gives `collect_study` an empty list); the price is a process and a code-location
import per slot, and the training set read once per slot.

Pools: only `prepare_study` takes the `optuna_study` pool. It is the step that writes
the study's set-up (creation, warm-start copies, stale-trial failing, tickets): two of
those at once could seed a new study twice. The slots write only trials, and the
tickets make that safe under any concurrency, so a slot holding the pool would only
block its siblings (the pool has one slot). `collect_study` only reads the study.
A second run of the same study while the first one's slots still run no longer waits:
its prepare counts the running trials as spent and tickets only what is missing, the
two runs' slots share the tickets, and the budget stays exact; each run's record is the
study as its collect step found it.

The data handed from step to step (the plan, each slot's summary) is small and goes
through the run's default IO manager; it holds no storage URL (it may carry a
password): every step takes the URL from the configuration.
"""

import time
from dataclasses import dataclass

import dagster as dg

from e2i_platform.lib.gates import require_upstream_gates
from e2i_platform.lib.pools import pool_for
from e2i_platform.lib.transient import retry_transient
from e2i_platform.resources.config import ConfigResource
from e2i_platform.resources.mlflow import MlflowResource


class HpoStepConfig(dg.Config):
    """What the Launchpad's `hpo_study` config maps to (`training.assets`)."""

    run_mode: str | None = None
    parallel_workers: int | None = None


@dataclass
class Handoff:
    """From `prepare_study` to the slots and `collect_study`."""

    plan: object  # training.study.StudyPlan
    dataset_version: str  # the training set the study was prepared on
    upstream_gates: dict  # the verdicts the prepare step relied on
    step_started: float  # epoch seconds: when hpo_study's first step began its work
    workers: int  # slots asked for (configured or from the Launchpad)


def _step(context: dg.AssetExecutionContext):
    return context.op_execution_context.get_step_execution_context()


def _run_mode(config: HpoStepConfig, settings) -> str:
    return config.run_mode or settings.training.run_mode


def _storage_url(settings) -> str:
    return settings.under_home(settings.optuna.storage)


@dg.op(
    name="prepare_study",
    out={"plan": dg.Out(Handoff), "slots": dg.DynamicOut(int)},
    pool=pool_for("prepare_study"),
    description="Open, resume or warm start the study; ticket its remaining trials; one "
    "dynamic output per trial slot.",
)
def prepare_study_step(
    context: dg.AssetExecutionContext,
    config: HpoStepConfig,
    training_dataset,
    e2i_config: ConfigResource,
    mlflow: MlflowResource,
):
    from e2i_platform.lib.versions import frame_version
    from e2i_platform.training.dataset import LABEL
    from e2i_platform.training.model_data import model_data
    from e2i_platform.training.model_run import TRAINING_SET
    from e2i_platform.training.study import prepare_study

    started = time.time()
    settings = e2i_config.settings()
    verdicts = require_upstream_gates(context, settings)
    retries = settings.platform.retries
    with retry_transient(context, retries.max_retries, retries.first_wait_seconds):
        mlflow.ensure_reachable()
        content_hash = frame_version(training_dataset)
        plan = prepare_study(
            model_data(training_dataset),
            settings.optuna,
            _storage_url(settings),
            content_hash,
            settings.training.seed,
            mlflow=mlflow if mlflow.enabled else None,
            force_new=_run_mode(config, settings) == "force_new",
        )
        if plan.study_run_id:
            # The study's run names what it searched on (once: MLflow keeps one input per
            # dataset name and digest).
            mlflow.log_dataset(
                plan.study_run_id,
                training_dataset,
                TRAINING_SET,
                content_hash,
                context="tuning",
                targets=LABEL,
            )
    workers = config.parallel_workers or settings.optuna.parallel_workers
    slots = min(workers, plan.trials_to_run)
    context.log.info(
        f"hpo_study {plan.study_name}: {plan.decision}, {plan.trials_to_run} trial(s) to run "
        f"in {slots} slot(s)"
    )
    yield dg.Output(
        Handoff(plan, content_hash, {v.label: v.reason for v in verdicts}, started, workers),
        "plan",
    )
    for slot in range(slots):
        yield dg.DynamicOutput(slot, mapping_key=f"slot_{slot}", output_name="slots")


@dg.op(
    name="trial_slot",
    description="Run the study's ticketed trials until none is left (other slots share them).",
)
def trial_slot_step(
    context: dg.AssetExecutionContext,
    plan: Handoff,
    slot: int,
    training_dataset,
    e2i_config: ConfigResource,
    mlflow: MlflowResource,
) -> dict:
    from e2i_platform.lib import step_cost
    from e2i_platform.lib.versions import frame_version
    from e2i_platform.training.model_data import model_data
    from e2i_platform.training.study import run_slot

    settings = e2i_config.settings()
    require_upstream_gates(context, settings)
    version = frame_version(training_dataset)
    if version != plan.dataset_version:
        raise dg.Failure(
            f"hpo_study {plan.plan.study_name}: the training set changed after the study was "
            f"prepared (data version {version}, prepared on {plan.dataset_version}): "
            "materialize hpo_study again"
        )
    retries = settings.platform.retries
    with retry_transient(context, retries.max_retries, retries.first_wait_seconds):
        result = run_slot(
            model_data(training_dataset),
            settings.optuna,
            _storage_url(settings),
            plan.plan,
            settings.training.seed,
            slot,
            mlflow=mlflow if mlflow.enabled else None,
            label=_step(context).step.key,
        )
    result["peak_rss_mib"] = round(step_cost.peak_rss_mib(), 1)
    context.log.info(f"{result['slot']}: {len(result['trials'])} trial(s) {result['trials']}")
    for r in result.get("replaced", []):
        context.log.warning(
            f"{result['slot']}: ticket {r['ticket']} of hpo_study {plan.plan.study_name} was "
            f"dead ({r['why']}): replaced by trial {r['replacement']}, run here"
        )
    return result


@dg.op(
    name="collect_study",
    out=dg.Out(io_manager_key="records"),
    description="The finished study's record: best trial, counts, warm start, workers.",
)
def collect_study_step(
    context: dg.AssetExecutionContext,
    plan: Handoff,
    slots: list[dict],
    e2i_config: ConfigResource,
    mlflow: MlflowResource,
) -> dg.Output:
    from e2i_platform.lib import step_cost
    from e2i_platform.training.study import collect_study

    # Its inputs come through Dagster's IO manager, which starts no step cost: the peak
    # is this step's own (the slots' are in the record); the seconds are the graph's.
    step = context.get_step_execution_context()
    step_cost.start(step.run_id, step.step.key, clock=False)
    settings = e2i_config.settings()
    retries = settings.platform.retries
    with retry_transient(context, retries.max_retries, retries.first_wait_seconds):
        record = collect_study(
            settings.optuna,
            _storage_url(settings),
            plan.plan,
            sorted(slots, key=lambda s: s["slot"]),
            mlflow=mlflow if mlflow.enabled else None,
            # As configured (`<home>` unresolved): the record names no path of this home.
            storage_shown=settings.optuna.storage,
        ).record
    record["workers"]["configured"] = plan.workers
    for entry, slot in zip(
        record["workers"]["per_slot"], sorted(slots, key=lambda s: s["slot"]), strict=True
    ):
        entry["peak_rss_mib"] = slot.get("peak_rss_mib")
    record["mlflow"]["tracking"] = "on" if mlflow.enabled else "off"
    if record["mlflow"]["study_run_id"]:
        record["mlflow"]["study_run"] = mlflow.run_link(record["mlflow"]["study_run_id"])
    context.log.info(f"hpo_study {record['study_name']}: {record['decision']}")
    if record["replaced_tickets"]:
        context.log.warning(
            f"hpo_study {record['study_name']}: {len(record['replaced_tickets'])} ticket(s) "
            f"of a slot that died replaced: {record['replaced_tickets']}"
        )
    return dg.Output(
        record,
        data_version=dg.DataVersion(f"{record['identity'][:12]}-{record['best_trial']}"),
        metadata={
            "upstream_gates": dg.MetadataValue.json(plan.upstream_gates),
            "study": dg.MetadataValue.text(record["study_name"]),
            "decision": dg.MetadataValue.text(record["decision"]),
            "reused": dg.MetadataValue.bool(record["decision"] == "reused"),
            "trials": dg.MetadataValue.json(record["trials"]),
            "trials_run_now": dg.MetadataValue.int(record["trials_run_now"]),
            "pruned": dg.MetadataValue.int(record["trials"].get("pruned", 0)),
            "best_valid_auc": dg.MetadataValue.float(record["best_valid_auc"]),
            "baseline_logreg_valid_auc": dg.MetadataValue.float(record["baseline"]["valid_auc"]),
            "best_params": dg.MetadataValue.json(record["best_params"]),
            "warm_start": dg.MetadataValue.json(record["warm_start"]),
            # Optuna's own best_trial (what optuna-dashboard shows): the same trial.
            "optuna_best_trial": dg.MetadataValue.int(record["optuna_best_trial"])
            if record.get("optuna_best_trial") is not None
            else dg.MetadataValue.text("none"),
            # Trials of crashed processes that the heartbeat ended as FAIL.
            "heartbeat": dg.MetadataValue.json(record.get("heartbeat", {})),
            # This run's tickets whose slot died (heartbeat stale, or stopped by an
            # error), each replaced by a new trial that another slot ran: [{ticket, why,
            # replacement, by}]; the budget stays exact.
            "replaced_tickets": dg.MetadataValue.json(record.get("replaced_tickets", [])),
            "tuning_sample": dg.MetadataValue.json(record["tuning_sample"]),
            # Which slots ran this run's trials (step key, pid, host, trials, seconds).
            "workers": dg.MetadataValue.json(record["workers"]),
            "mlflow": dg.MetadataValue.json(record["mlflow"]),
            **mlflow.ui_links(run_id=record["mlflow"]["study_run_id"]),
            "storage": dg.MetadataValue.text(record["storage"]),
            # The study's wall time over all its steps, from the prepare step's start to
            # now (what the cost gate adds up; `lib.step_cost` adds this step's peak RSS).
            "step_seconds": dg.MetadataValue.float(round(time.time() - plan.step_started, 3)),
        },
    )
