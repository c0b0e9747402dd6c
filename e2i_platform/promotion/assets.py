"""Promotion-stage assets: the champion release and the batch scores it produces."""

from datetime import UTC, datetime

import dagster as dg

from e2i_platform.lib.gates import GateClosed, gated_asset, verdicts_for
from e2i_platform.lib.graph import blocking_checks, location_graph
from e2i_platform.lib.versions import DATA_VERSION_TAG
from e2i_platform.promotion.inputs import SCORING_COLUMNS
from e2i_platform.resources.config import ConfigResource
from e2i_platform.resources.feast import FeastResource
from e2i_platform.resources.mlflow import MlflowResource


def _provenance(context: dg.AssetExecutionContext) -> tuple[dict[str, dict], str | None]:
    """The latest data version (and run) of every asset upstream of this one, read in one
    query, and the feature registry's hash from the same events."""
    graph = location_graph(context.job_def)
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


def _gate_results(context: dg.AssetExecutionContext, settings) -> dict[str, dict]:
    """The latest evaluation of every blocking check in the code location, and whether
    its verdict holds now (`lib.verdicts`)."""
    graph = location_graph(context.job_def)
    keys = blocking_checks(graph, graph.get_all_asset_keys())
    out = {}
    for key, verdict in zip(
        keys, verdicts_for(context.instance, graph, settings, keys), strict=True
    ):
        record = context.instance.get_latest_asset_check_evaluation_record(key)
        entry: dict = {"holds": verdict.passed, "verdict": verdict.reason}
        if record is None:
            entry.update(passed=None, status="never evaluated")
        elif record.status.value not in ("SUCCEEDED", "FAILED"):
            # e.g. the scores' schema gate, planned in this run after the release
            entry.update(passed=None, status=record.status.value, run_id=record.run_id)
        else:
            evaluation = record.evaluation
            entry.update(
                passed=evaluation.passed,
                severity=evaluation.severity.value,
                summary=evaluation.description,
                run_id=record.run_id,
            )
            # What the gate observed and its limit (lib.gate_results `extra`): the
            # release report's gate table.
            if measures := {
                k: getattr(v, "value", v)
                for k, v in (evaluation.metadata or {}).items()
                if k.startswith(("observed_", "threshold_"))
            }:
                entry["measures"] = measures
        out[f"{key.asset_key.to_user_string()}.{key.name}"] = entry
    return out


class ChampionConfig(dg.Config):
    """Promote a model that was rolled back before: only deliberately, with a reason
    (recorded in the release manifest)."""

    override_rollback: bool = False
    reason: str = ""


def _short(sha: str) -> str:
    return sha[:12]


def require_evidence(trained: dict, evaluation: dict, current: dict | None) -> None:
    """The promotion gates judged exactly this model, against the champion of now."""
    evaluated = evaluation.get("model", {})
    if evaluated.get("model_sha256") != trained["model_sha256"]:
        raise GateClosed(
            "champion_model refused: model_evaluation evaluated model "
            f"{_short(str(evaluated.get('model_sha256')))} ({evaluated.get('model_file')}), "
            f"but the trained_model to promote is {_short(trained['model_sha256'])} "
            f"({trained['model_file']}). Materialize model_evaluation (and its gates) for this "
            "model first."
        )
    compared = evaluation.get("champion", {})
    compared_id = compared.get("release_id") if compared.get("exists") else None
    current_id = current["release_id"] if current else None
    if compared_id != current_id:
        raise GateClosed(
            "champion_model refused: model_evaluation compared the model with champion release "
            f"{compared_id or '(none)'}, but the current release is {current_id or '(none)'}. "
            "Materialize model_evaluation again so the quality gate judges against the "
            "current champion."
        )


def require_model_file(home, trained: dict) -> None:
    """The model file is the one trained (and evaluated): not replaced since. `home`: the
    models' store (`training.model_run.model_store`)."""
    from e2i_platform.training.model_run import model_file_mismatch, model_path

    if problem := model_file_mismatch(
        model_path(home, trained, "trained_model"), trained["model_sha256"]
    ):
        raise GateClosed(
            f"champion_model refused: the trained model's file {problem}; materialize "
            "trained_model again."
        )


def require_not_rolled_back(store, trained: dict, config: ChampionConfig) -> dict | None:
    """A model a rollback removed is promoted again only with an explicit override
    (`store`: where the releases are, `lib.releases.release_store`)."""
    from e2i_platform.promotion.release import rollbacks_of

    rollbacks = rollbacks_of(store, trained["model_sha256"])
    if not rollbacks:
        return None
    last = rollbacks[-1]
    if not config.override_rollback:
        raise GateClosed(
            f"champion_model refused: model {_short(trained['model_sha256'])} was rolled back "
            f"in release {last['release_id']} ({last['created_at']}, reason: {last['reason']!r}) "
            "and is not promoted again automatically. Train another model, or promote it on "
            "purpose with the champion_model config override_rollback=true and a reason."
        )
    if not config.reason.strip():
        raise dg.Failure("champion_model: override_rollback needs a reason (config `reason`)")
    return {
        "rolled_back_in": last["release_id"],
        "rollback_reason": last["reason"],
        "reason": config.reason,
    }


@gated_asset(group_name="promotion", kinds={"mlflow"}, io_manager_key="records")
def champion_model(
    context: dg.AssetExecutionContext,
    config: ChampionConfig,
    trained_model: dict,
    model_evaluation: dict,
    e2i_config: ConfigResource,
    mlflow: MlflowResource,
) -> dg.Output:
    """The model that passed every promotion gate becomes champion: the MLflow alias
    `champion` moves to its registered version and a release manifest is written to
    `releases/<release_id>/manifest.json` (in the home, or in the shared object store of
    `platform.store.url`) with full provenance (data versions
    of every upstream asset, feature views and registry hash, params, metrics, every gate
    result, code version, MLflow run and model version, previous release). Refuses unless
    `model_evaluation` evaluated exactly this model (sha256) against the champion that
    is current now; never re-promotes a rolled-back model without an override. The same
    model already champion makes no new release, and says so."""
    from e2i_platform.lib.releases import release_store
    from e2i_platform.promotion.release import release_lock

    settings = e2i_config.settings()
    mlflow.ensure_reachable()
    # A rollback cannot slip in between judging and promoting, on any machine.
    with release_lock(release_store(settings)):
        return _promote_or_keep(context, config, trained_model, model_evaluation, settings, mlflow)


def _promote_or_keep(context, config, trained_model, model_evaluation, settings, mlflow):
    from e2i_platform.lib.home_paths import stored
    from e2i_platform.lib.releases import (
        REPORT,
        current_release,
        manifest_path,
        release_store,
        report_path,
        verification,
    )
    from e2i_platform.lib.versions import code_version
    from e2i_platform.promotion.release import new_release_id, promote
    from e2i_platform.promotion.release_report import release_evaluation
    from e2i_platform.training.model_run import model_path, model_store, service_spec

    home = model_store(settings)  # the model files: the home, or the object store
    store = release_store(settings)  # the releases
    current = current_release(store)
    require_evidence(trained_model, model_evaluation, current)
    require_model_file(home, trained_model)
    if current is not None and current["model"]["model_sha256"] == trained_model["model_sha256"]:
        # The model as the models' store names it (a manifest written before may hold an
        # absolute path in another home: lib.home_paths).
        model_file = stored(
            home, model_path(home, current["model"], f"release {current['release_id']}")
        )
        record = {
            **current,
            "model": {**current["model"], "model_file": model_file},
            "decision": "unchanged: this model is already the champion",
        }
    else:
        override = require_not_rolled_back(store, trained_model, config)
        metric_keys = ("roc_auc", "pr_auc", "brier", "precision_at_threshold")
        data_versions, registry_hash = _provenance(context)
        manifest = {
            "release_id": new_release_id("promotion"),
            "kind": "promotion",
            "created_at": datetime.now(UTC).isoformat(),
            "model": {
                # Relative to the models' store: a restored copy of a home serves its own
                # file; with an object store, every machine the same one.
                "model_file": stored(home, model_path(home, trained_model, "trained_model")),
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
            "gates": _gate_results(context, settings),
            "evaluated_model_sha256": model_evaluation["model"]["model_sha256"],
            "override": override,
            "code_version": code_version(),
            "dagster_run_id": context.run.run_id,
            "previous_release": current["release_id"] if current else None,
            # Curves and regional ROC-AUC of the model and the champion: the release report.
            "evaluation": release_evaluation(model_evaluation),
        }
        record = {**promote(store, mlflow, manifest), "decision": "promoted"}
    return dg.Output(
        record,
        data_version=dg.DataVersion(record["release_id"]),
        metadata={
            "release_id": dg.MetadataValue.text(record["release_id"]),
            "decision": dg.MetadataValue.text(record["decision"]),
            "reused": dg.MetadataValue.bool(record["decision"] != "promoted"),
            "manifest": dg.MetadataValue.path(str(manifest_path(store, record["release_id"]))),
            # The release report next to it (none for a release made before reports).
            "report": dg.MetadataValue.path(str(report_path(store, record["release_id"])))
            if record.get(REPORT)
            else dg.MetadataValue.text("none: release written before release reports"),
            # "verified", or "unverified (written before hashes)" for an old release kept
            "manifest_verification": dg.MetadataValue.text(verification(record)),
            "previous_release": dg.MetadataValue.text(str(record.get("previous_release"))),
            "mlflow_alias": dg.MetadataValue.json(record.get("mlflow_alias", {})),
            **_registry_metadata(mlflow, record),
        },
    )


def _registry_metadata(mlflow: MlflowResource, record: dict) -> dict[str, dg.MetadataValue]:
    """The registry now (alias -> version: `champion`, and `challenger` if one waits) and
    the model's MLflow links. Read after CURRENT moved: MLflow failing here must not fail
    a release that is already published (scoring would refuse its CURRENT), so it is
    said in the metadata instead."""
    try:
        return {
            "mlflow_aliases": dg.MetadataValue.json(mlflow.aliases()),
            **mlflow.model_links(record["model"].get("mlflow", {})),
        }
    except Exception as exc:  # anything MLflow raises; credentials removed by the resource
        return {
            "mlflow_aliases": dg.MetadataValue.text(
                f"unavailable after the release was published: {type(exc).__name__}: "
                f"{str(exc)[:300]}"
            )
        }


@gated_asset(
    group_name="promotion",
    kinds={"lightgbm", "feast", "parquet"},
    io_manager_key="warehouse",
    deps=["online_features"],
    ins={
        table: dg.AssetIn(metadata={"columns": columns})
        for table, columns in SCORING_COLUMNS.items()
    },
)
def patient_risk_scores(
    champion_model: dict,
    patient_journeys,
    feast: FeastResource,
    e2i_config: ConfigResource,
    mlflow: MlflowResource,
) -> dg.Output:
    """Discontinuation risk for every current patient (latest journey still open), scored
    by the model `releases/CURRENT` names (a rollback included) on features read from
    the online store through the feature service, as rows of the `ml_predictions`
    contract. Refused while the online store's `freshness` gate does not hold. Patients
    the online store does not hold are scored on missing values and counted."""
    from e2i_platform.lib.releases import current_release, release_store, verification
    from e2i_platform.lib.table_metadata import contract_docs, table_metadata
    from e2i_platform.promotion.scoring import score_current_patients
    from e2i_platform.training.model_run import model_store

    settings = e2i_config.settings()
    release = current_release(release_store(settings))
    if release is None:
        raise dg.Failure("patient_risk_scores: no current release (releases/CURRENT) to score with")
    if release["release_id"] != champion_model["release_id"]:
        # CURRENT moves only with champion_model (promotion or recorded rollback).
        raise dg.Failure(
            f"patient_risk_scores refused: releases/CURRENT names {release['release_id']}, but "
            f"champion_model's published value is {champion_model['release_id']}; CURRENT was "
            "changed outside the platform. Promote or roll back through champion_model."
        )
    scores, stats = score_current_patients(
        model_store(settings), release, patient_journeys, feast.store()
    )
    tolerated = settings.feast.limits("patient_features").max_missing_share
    unserved = stats["patients_without_online_patient_features"]
    if len(scores) and unserved / len(scores) > tolerated:
        raise dg.Failure(
            f"patient_risk_scores refused: {unserved} of {len(scores)} current patients have no "
            f"patient_features online (> {tolerated:.1%} tolerated); they would be scored on "
            "nothing. Refresh the online store (feature_refresh) and score again."
        )
    scored_by = release["model"].get("mlflow", {}).get("model_version")
    return dg.Output(
        scores,
        metadata={
            **table_metadata(scores, contract_docs("ml_predictions")),
            # The page of the version that scored (no MLflow call: scoring never needs it).
            **mlflow.ui_links(model_version=scored_by),
            "model_version": dg.MetadataValue.text(scores["model_version"].iloc[0])
            if len(scores)
            else dg.MetadataValue.text("none"),
            "release_id": dg.MetadataValue.text(release["release_id"]),
            "release_kind": dg.MetadataValue.text(release.get("kind", "promotion")),
            "manifest_verification": dg.MetadataValue.text(verification(release)),
            "champion_model_record": dg.MetadataValue.text(champion_model["release_id"]),
            **stats,
        },
    )


def promotion_assets() -> list[dg.AssetsDefinition]:
    return [champion_model, patient_risk_scores]
