"""Rollback as a Dagster job (Launchpad: a reason) and from the command line:

    make rollback REASON="AUC regression seen in monitoring"
    python -m e2i_platform.ops.rollback --reason "..."

Both restore the previous release's model as champion (MLflow alias and
releases/CURRENT), record the rollback in a new release manifest, and record it on
the asset graph: a `champion_model` materialization whose value is the rollback
release, so `patient_risk_scores` re-scores with the restored model, `make run`
keeps it, and `champion_model` never promotes the rolled-back model again on its
own. The command line runs the same job on the platform's Dagster instance.
"""

import argparse
import json
import sys

import dagster as dg

from e2i_platform.lib.pools import pool_for
from e2i_platform.resources.config import ConfigResource
from e2i_platform.resources.mlflow import MlflowResource

ROLLBACK_JOB = "champion_rollback"
CHAMPION = dg.AssetKey("champion_model")


class RollbackConfig(dg.Config):
    reason: str


def record_on_graph(context: dg.OpExecutionContext, settings, manifest: dict) -> None:
    """Publish the rollback (or repair: `ops.releases`) release as champion_model's value
    and log its materialization, versioned like one of the asset's own (code version,
    inputs it stands on)."""
    from e2i_platform.lib.releases import release_store, report_path
    from e2i_platform.lib.versions import DATA_VERSION_TAG, INPUT_VERSION_PREFIX, platform_version
    from e2i_platform.resources.publication import Publications, write_json

    name = CHAMPION.to_user_string()
    pubs = Publications.for_settings(settings)
    kind = manifest["kind"]
    verb = {"rollback": "rolled back", "repair": "repaired"}[kind]
    record = {**manifest, "decision": f"{verb}: {manifest['reason']}"}
    pubs.stage(name, context.run_id, "json", lambda p: write_json(record, p))
    with pubs.lock(name):
        published = pubs.publish(name, context.run_id, "json", [])
    parents = [dg.AssetKey("trained_model"), dg.AssetKey("model_evaluation")]
    latest = context.instance.get_latest_materialization_events(parents)
    tags = {
        DATA_VERSION_TAG: manifest["release_id"],
        "dagster/code_version": platform_version(settings, "promotion"),
        f"e2i/{kind}": manifest["release_id"],
    }
    for parent, event in latest.items():
        version = (event.asset_materialization.tags or {}).get(DATA_VERSION_TAG) if event else None
        if version:
            tags[INPUT_VERSION_PREFIX + parent.to_user_string()] = version
    context.log_event(
        dg.AssetMaterialization(
            asset_key=CHAMPION,
            description=f"{kind} to release {manifest['restores_release']}: {manifest['reason']}",
            tags=tags,
            metadata={
                "release_id": manifest["release_id"],
                "decision": record["decision"],
                "kind": kind,
                "restores_release": manifest["restores_release"],
                "restored_manifest": manifest["restored_manifest_verification"],
                **(
                    {"rolled_back_release": manifest["rolled_back_release"]}
                    if kind == "rollback"
                    else {"replaced_current": dg.MetadataValue.json(manifest["replaced_current"])}
                ),
                "reason": manifest["reason"],
                "path": dg.MetadataValue.path(str(pubs.warehouse / published["path"])),
                "mlflow_alias": dg.MetadataValue.json(manifest["mlflow_alias"]),
                "report": dg.MetadataValue.path(
                    str(report_path(release_store(settings), manifest["release_id"]))
                ),
            },
        )
    )


@dg.op(
    description="Restore the previous release's model as champion; record a new manifest "
    "and a champion_model materialization.",
    pool=pool_for("rollback_champion"),  # moves the alias and CURRENT, as promotion does
)
def rollback_champion(
    context: dg.OpExecutionContext,
    config: RollbackConfig,
    e2i_config: ConfigResource,
    mlflow: MlflowResource,
) -> dict:
    from e2i_platform.lib.releases import release_store, report_path
    from e2i_platform.promotion.release import rollback
    from e2i_platform.training.model_run import model_store

    settings = e2i_config.settings()
    store = release_store(settings)
    mlflow.ensure_reachable()
    try:
        manifest = rollback(
            store, mlflow, config.reason, run_id=context.run_id, home=model_store(settings)
        )
    except RuntimeError as exc:
        raise dg.Failure(f"rollback refused: {exc}") from None
    record_on_graph(context, settings, manifest)
    context.add_output_metadata(
        {
            "release_id": manifest["release_id"],
            "restores_release": manifest["restores_release"],
            "rolled_back_release": manifest["rolled_back_release"],
            "restored_manifest": manifest["restored_manifest_verification"],
            "mlflow_alias": dg.MetadataValue.json(manifest["mlflow_alias"]),
            "report": dg.MetadataValue.path(str(report_path(store, manifest["release_id"]))),
        }
    )
    return manifest


@dg.job(name=ROLLBACK_JOB, description="Make the previous release's model champion again.")
def rollback_job():
    rollback_champion()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="make rollback",
        description="Make the previous release's model champion again: a new release of "
        "kind rollback, the MLflow alias and releases/CURRENT moved back, and a "
        "champion_model materialization recording it on the platform's Dagster instance.",
    )
    parser.add_argument("--reason", required=True, help="why (recorded in the manifest)")
    args = parser.parse_args(argv)
    if not args.reason.strip():
        parser.error("--reason must say why")

    from e2i_platform.ops.instance import use_instance
    from e2i_platform.settings import load_settings

    settings = load_settings()
    use_instance(settings)
    from e2i_platform.ops.location import load_definitions

    defs = load_definitions()
    with dg.DagsterInstance.get() as instance:
        result = defs.resolve_job_def(ROLLBACK_JOB).execute_in_process(
            instance=instance,
            run_config={
                "ops": {"rollback_champion": {"config": {"reason": args.reason}}},
                "loggers": {"console": {"config": {"log_level": "CRITICAL"}}},
            },
            raise_on_error=False,
        )
    if not result.success:
        from e2i_platform.ops.progress import failure_text

        failures = [e for e in result.all_events if e.is_step_failure]
        error = failures[0].step_failure_data.error if failures else None
        print(failure_text(error) if error else "run failed", file=sys.stderr)
        return 1
    manifest = result.output_for_node("rollback_champion")
    keys = ("release_id", "restores_release", "rolled_back_release", "mlflow_alias")
    print(json.dumps({k: manifest[k] for k in keys} | {"dagster_run": result.run_id}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
