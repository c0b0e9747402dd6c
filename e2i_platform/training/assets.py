"""Training-stage assets: the training set, the hyperparameter search, the trained model
and its evaluation (which the promotion gates check)."""

from enum import Enum
from typing import get_args

import dagster as dg
from pydantic import Field

from e2i_platform.lib.gates import gated_asset, gated_automation
from e2i_platform.resources.config import ConfigResource
from e2i_platform.resources.feast import FeastResource
from e2i_platform.resources.mlflow import MlflowResource
from e2i_platform.settings.models import RunMode as RunModeSetting
from e2i_platform.training.hpo_graph import collect_study_step, prepare_study_step, trial_slot_step
from e2i_platform.training.inputs import INPUT_COLUMNS


@gated_asset(
    group_name="training",
    kinds={"pandas", "parquet", "feast", "duckdb"},
    io_manager_key="warehouse",
    deps=["online_features"],
    ins={
        table: dg.AssetIn(metadata={"columns": columns}) for table, columns in INPUT_COLUMNS.items()
    },
)
def training_dataset(
    patient_journeys, treatment_events, feast: FeastResource, e2i_config: ConfigResource
) -> dg.Output:
    """Patient-level discontinuation labels at cutoff dates (every `cutoff_every_days`),
    joined point-in-time with the feature service `discontinuation_model_v1`: DuckDB
    ASOF joins on the Feast offline store's Parquet, with the views' keys and ttl from
    the Feast registry (`features.offline`). No entity row is dropped: rows without a
    match in a view are kept with null features and counted. Chronological train /
    validation / test split with a gap of one outcome window and each patient in one
    split only.
    Runs only after the online store passed its `freshness` gate; gated by `no_leakage`."""
    from e2i_platform.features.specs import SERVICE_VIEWS
    from e2i_platform.lib.table_metadata import ColumnDoc, feature_docs, table_metadata
    from e2i_platform.lib.versions import frame_version
    from e2i_platform.training.dataset import (
        COLUMN_DESCRIPTIONS,
        LABEL,
        SPLIT,
        DatasetSpec,
        chronological_split,
        feature_columns,
        join_features,
        label_rows,
    )

    cfg = e2i_config.settings().training.dataset
    spec = DatasetSpec(**cfg.model_dump())
    store = feast.store()
    # Split first: the split needs only cutoffs and patients, and the join then reads
    # features only for the rows that are kept (about half at brand size).
    entity_rows, split_stats = chronological_split(
        label_rows(patient_journeys, treatment_events, spec), spec
    )
    joined, join_stats = join_features(store, entity_rows, feast.spill_dir)
    dataset = joined[[*(c for c in joined.columns if c != SPLIT), SPLIT]]
    by_split = dataset.groupby(SPLIT)[LABEL].agg(["size", "mean"])
    docs = {k: v for view in SERVICE_VIEWS for k, v in feature_docs(view, f"{view}__").items()}
    docs |= {name: ColumnDoc(text) for name, text in COLUMN_DESCRIPTIONS.items()}
    return dg.Output(
        dataset,
        data_version=dg.DataVersion(frame_version(dataset)),
        metadata={
            **table_metadata(dataset, docs),
            "rows_per_split": dg.MetadataValue.json(
                {s: int(n) for s, n in by_split["size"].items()}
            ),
            "prevalence_per_split": dg.MetadataValue.json(
                {s: round(float(p), 4) for s, p in by_split["mean"].items()}
            ),
            "cutoffs": dg.MetadataValue.int(int(dataset["event_timestamp"].nunique())),
            "features": dg.MetadataValue.json(feature_columns(dataset)),
            "point_in_time_join": dg.MetadataValue.json(join_stats),
            "split": dg.MetadataValue.json(split_stats),
        },
    )


# The Launchpad offers the modes config/training.yaml accepts, as a choice.
RunMode = Enum("RunMode", {mode: mode for mode in get_args(RunModeSetting)})


class RunModeConfig(dg.Config):
    """Overrides config/training.yaml's `run_mode` for this run (Launchpad)."""

    run_mode: RunMode | None = None


def _run_mode(config: RunModeConfig, e2i_config: ConfigResource) -> str:
    return config.run_mode.value if config.run_mode else e2i_config.settings().training.run_mode


class HpoStudyConfig(RunModeConfig):
    """`hpo_study` in the Launchpad: the run mode, and the number of trial slots for this
    run (config/optuna_config.yaml's `parallel_workers` when unset)."""

    parallel_workers: int | None = Field(None, ge=1, le=64)


@dg.config_mapping
def _hpo_study_config(config: HpoStudyConfig) -> dict:
    return {
        "prepare_study": {
            "config": {
                "run_mode": config.run_mode.value if config.run_mode else None,
                "parallel_workers": config.parallel_workers,
            }
        }
    }


@dg.graph_asset(
    name="hpo_study",
    group_name="training",
    kinds={"optuna", "lightgbm", "mlflow"},
    config=_hpo_study_config,
    automation_condition=gated_automation(),
)
def hpo_study(training_dataset):
    """Optuna search (TPE, Hyperband over boosting rounds) of LightGBM hyperparameters on
    the training split, scored by validation ROC-AUC; a logistic-regression baseline is
    recorded beside it. The study is named by the training set's data version and the
    search settings: reused when complete, resumed when not, warm started from similar
    past studies when new (which ones, their scores, and the rejected ones are in the
    metadata). Its trials run in `parallel_workers` slots at once (steps on any worker,
    one study in one database, the trial budget exact: `training.hpo_graph`). Every
    trial is a nested MLflow run under the study's run, which lists the training set as
    its input dataset (by content hash). Runs only after training_dataset passed its
    `no_leakage` gate."""
    plan, slots = prepare_study_step(training_dataset)
    done = slots.map(lambda slot: trial_slot_step(plan, slot, training_dataset))
    return collect_study_step(plan, done.collect())


@gated_asset(
    group_name="training",
    kinds={"lightgbm", "mlflow"},
    io_manager_key="records",
)
def trained_model(
    context: dg.AssetExecutionContext,
    config: RunModeConfig,
    training_dataset,
    hpo_study: dict,
    e2i_config: ConfigResource,
    mlflow: MlflowResource,
) -> dg.Output:
    """LightGBM trained with the study's best parameters for its best number of rounds,
    written to `models/<model>/spec-<8>_exec-<8>/v<N>/` of the home or the shared store (model.txt,
    metrics.json, metadata.json; atomically) and registered in MLflow with a signature
    as the candidate: alias `challenger`, its training set logged as the run's input.
    The run mode (config/training.yaml or the Launchpad) decides: reuse_if_exists,
    force_new, resume_if_incomplete, continue_from_previous. A reused run says so."""
    from e2i_platform.training.model_run import model_store, train_or_reuse

    settings = e2i_config.settings()
    mlflow.ensure_reachable()
    record = train_or_reuse(
        settings, training_dataset, hpo_study, _run_mode(config, e2i_config), mlflow
    )
    context.log.info(f"trained_model: {record['action']} {record['path']}")
    return dg.Output(
        record,
        data_version=dg.DataVersion(record["model_sha256"][:16]),
        metadata={
            "action": dg.MetadataValue.text(record["action"]),
            "reused": dg.MetadataValue.bool(record["action"] == "reuse"),
            "reason": dg.MetadataValue.text(record["reason"]),
            "run_mode": dg.MetadataValue.text(record["mode"]),
            "path": dg.MetadataValue.path(str(model_store(settings) / record["path"])),
            "variant": dg.MetadataValue.int(record["variant"]),
            "spec_fingerprint": dg.MetadataValue.text(record["spec"]),
            "exec_fingerprint": dg.MetadataValue.text(record["exec"]),
            "valid_auc": dg.MetadataValue.float(record["metrics"]["valid_auc"]),
            "mlflow": dg.MetadataValue.json(record["mlflow"]),
            # The alias `challenger`: set on a new version, moved back to a reused one.
            "challenger": dg.MetadataValue.json(record["challenger"]),
            **mlflow.model_links(record["mlflow"]),
        },
    )


@gated_asset(
    group_name="training",
    kinds={"lightgbm", "sklearn"},
    io_manager_key="records",
)
def model_evaluation(
    context: dg.AssetExecutionContext,
    training_dataset,
    trained_model: dict,
    e2i_config: ConfigResource,
    mlflow: MlflowResource,
) -> dg.Output:
    """The trained model on the test split: ROC-AUC, PR-AUC, Brier, precision and recall
    at the threshold chosen on validation, ROC-AUC per region, p95 scoring latency for a
    batch of rows on one core; and the current champion scored on the same test rows, so
    the quality gate compares like with like. Its cost: the wall seconds of the steps
    that produced it (study and training, as produced when reused), its files' size and
    the CPU seconds to score 1M rows on one core. The promotion gates check this asset."""
    from e2i_platform.training.evaluation import model_size, production_cost
    from e2i_platform.training.model_run import evaluate_models, model_store

    settings = e2i_config.settings()
    record = evaluate_models(settings, training_dataset, trained_model, mlflow)
    latency = record["latency"]
    record["cost"] = {
        "production": production_cost(
            context.instance, model_store(settings), trained_model, context.run.run_id
        ),
        "model_size": model_size(model_store(settings), trained_model),
        "scoring": {
            **latency["per_million_rows"],
            "threads": latency["threads"],
            "batch_rows": latency["batch_rows"],
            "repeats": latency["repeats"],
        },
    }
    return dg.Output(
        record,
        metadata={
            "roc_auc": dg.MetadataValue.float(record["roc_auc"]),
            "pr_auc": dg.MetadataValue.float(record["pr_auc"]),
            "brier": dg.MetadataValue.float(record["brier"]),
            "threshold": dg.MetadataValue.json(record["threshold"]),
            "precision_at_threshold": dg.MetadataValue.float(record["precision_at_threshold"]),
            "recall_at_threshold": dg.MetadataValue.float(record["recall_at_threshold"]),
            "region_auc": dg.MetadataValue.json(record["region_auc"]),
            "latency": dg.MetadataValue.json(latency),
            "cost": dg.MetadataValue.json(record["cost"]),
            "champion": dg.MetadataValue.json(record["champion"]),
            # The test metrics are logged to the evaluated model's run.
            **mlflow.model_links(trained_model["mlflow"]),
        },
    )


def training_assets() -> list[dg.AssetsDefinition]:
    return [training_dataset, hpo_study, trained_model, model_evaluation]
