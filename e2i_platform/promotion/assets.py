"""Promotion-stage assets: the champion release and the batch scores it produces."""

from datetime import UTC, datetime

import dagster as dg

from e2i_platform.lib.gates import code_location_graph, gated_asset
from e2i_platform.lib.versions import DATA_VERSION_TAG
from e2i_platform.resources.config import ConfigResource
from e2i_platform.resources.feast import FeastResource
from e2i_platform.resources.mlflow import MlflowResource


def _provenance(context: dg.AssetExecutionContext) -> tuple[dict[str, dict], str | None]:
    """The latest data version (and run) of every asset upstream of this one, read in one
    query, and the feature registry's hash from the same events."""
    graph = code_location_graph(context)
    upstream = sorted(graph.get_ancestor_asset_keys(context.asset_key), key=str)
    latest = context.instance.get_latest_materialization_events(upstream)
    versions: dict[str, dict] = {}
    for key in upstream:
        event = latest.get(key)
        tags = (event.asset_materialization.tags or {}) if event else {}
        versions[key.to_user_string()] = {
            "data_version": tags.get(DATA_VERSION_TAG),
            "run_id": event.run_id if event else None,
        }
    registry = latest.get(dg.AssetKey("feature_registry"))
    value = registry.asset_materialization.metadata.get("registry_hash") if registry else None
    return versions, value.value if value is not None else None


def _gate_results(context: dg.AssetExecutionContext) -> dict[str, dict]:
    """The latest evaluation of every blocking check in the code location."""
    graph = code_location_graph(context)
    out = {}
    for key in sorted(graph.asset_check_keys, key=str):
        if not graph.get_check_spec(key).blocking:
            continue
        record = context.instance.get_latest_asset_check_evaluation_record(key)
        name = f"{key.asset_key.to_user_string()}.{key.name}"
        if record is None:
            out[name] = {"passed": None, "status": "never evaluated"}
        elif record.status.value not in ("SUCCEEDED", "FAILED"):
            # e.g. the scores' schema gate, planned in this run after the release
            out[name] = {"passed": None, "status": record.status.value, "run_id": record.run_id}
        else:
            evaluation = record.evaluation
            out[name] = {
                "passed": evaluation.passed,
                "severity": evaluation.severity.value,
                "summary": evaluation.description,
                "run_id": record.run_id,
            }
    return out


@gated_asset(group_name="promotion", kinds={"mlflow"}, io_manager_key="records")
def champion_model(
    context: dg.AssetExecutionContext,
    trained_model: dict,
    model_evaluation: dict,
    e2i_config: ConfigResource,
    mlflow: MlflowResource,
) -> dg.Output:
    """The model that passed every promotion gate becomes champion: the MLflow alias
    `champion` moves to its registered version and a release manifest is written to
    `$E2I_HOME/releases/<release_id>/manifest.json` with full provenance (data versions
    of every upstream asset, feature views and registry hash, params, metrics, every gate
    result, code version, MLflow run and model version, previous release). The same
    model already champion makes no new release, and says so."""
    from e2i_platform.lib.versions import code_version
    from e2i_platform.promotion.release import current_release, new_release_id, promote
    from e2i_platform.training.model_run import service_spec

    home = e2i_config.settings().home
    mlflow.ensure_reachable()
    current = current_release(home)
    if current is not None and current["model"]["model_sha256"] == trained_model["model_sha256"]:
        record = {**current, "decision": "unchanged: this model is already the champion"}
    else:
        metric_keys = ("roc_auc", "pr_auc", "brier", "precision_at_threshold")
        data_versions, registry_hash = _provenance(context)
        manifest = {
            "release_id": new_release_id("promotion"),
            "kind": "promotion",
            "created_at": datetime.now(UTC).isoformat(),
            "model": {
                "model_file": trained_model["model_file"],
                "model_sha256": trained_model["model_sha256"],
                "features": trained_model["features"],
                "variant": trained_model["variant"],
                "spec": trained_model["spec"],
                "exec": trained_model["exec"],
                "mlflow": trained_model["mlflow"],
            },
            "params": {**trained_model["params"], "rounds": trained_model["rounds"]},
            "metrics": {
                **{k: model_evaluation[k] for k in metric_keys},
                "recall_at_threshold": model_evaluation["recall_at_threshold"],
                "threshold": model_evaluation["threshold"]["threshold"],
                "region_auc_gap": model_evaluation["region_auc_gap"],
                "p95_ms": model_evaluation["latency"]["p95_ms"],
            },
            "data_versions": data_versions,
            "features": {"feature_service": service_spec(), "registry_hash": registry_hash},
            "gates": _gate_results(context),
            "code_version": code_version(),
            "dagster_run_id": context.run.run_id,
            "previous_release": current["release_id"] if current else None,
        }
        record = {**promote(home, mlflow, manifest), "decision": "promoted"}
    return dg.Output(
        record,
        data_version=dg.DataVersion(record["release_id"]),
        metadata={
            "release_id": dg.MetadataValue.text(record["release_id"]),
            "decision": dg.MetadataValue.text(record["decision"]),
            "reused": dg.MetadataValue.bool(record["decision"] != "promoted"),
            "manifest": dg.MetadataValue.path(
                str(home / "releases" / record["release_id"] / "manifest.json")
            ),
            "previous_release": dg.MetadataValue.text(str(record.get("previous_release"))),
            "mlflow_alias": dg.MetadataValue.json(record.get("mlflow_alias", {})),
        },
    )


@gated_asset(
    group_name="promotion",
    kinds={"lightgbm", "feast", "parquet"},
    io_manager_key="warehouse",
)
def patient_risk_scores(
    champion_model: dict, patient_journeys, feast: FeastResource, e2i_config: ConfigResource
) -> dg.Output:
    """Discontinuation risk for every current patient (latest journey still open), scored
    by the champion on features read from the online store through the feature service,
    as rows of the `ml_predictions` contract. Patients the online store does not hold
    are scored on missing values and counted in the metadata."""
    from e2i_platform.promotion.scoring import score_current_patients

    scores, stats = score_current_patients(champion_model, patient_journeys, feast.store())
    return dg.Output(
        scores,
        metadata={
            "model_version": dg.MetadataValue.text(scores["model_version"].iloc[0])
            if len(scores)
            else dg.MetadataValue.text("none"),
            "release_id": dg.MetadataValue.text(champion_model["release_id"]),
            **stats,
        },
    )


def promotion_assets() -> list[dg.AssetsDefinition]:
    return [champion_model, patient_risk_scores]
