"""Rollback as a Dagster job (Launchpad: a reason) and from the command line:

    make rollback REASON="AUC regression seen in monitoring"
    python -m e2i_platform.ops.rollback --reason "..."

Both restore the previous release's model as champion (MLflow alias and
releases/CURRENT) and record the rollback in a new release manifest.
"""

import argparse
import json
import sys

import dagster as dg

from e2i_platform.resources.config import ConfigResource
from e2i_platform.resources.mlflow import MlflowResource

ROLLBACK_JOB = "champion_rollback"


class RollbackConfig(dg.Config):
    reason: str


@dg.op(description="Restore the previous release's model as champion; record a new manifest.")
def rollback_champion(
    context: dg.OpExecutionContext,
    config: RollbackConfig,
    e2i_config: ConfigResource,
    mlflow: MlflowResource,
) -> dict:
    from e2i_platform.promotion.release import rollback

    mlflow.ensure_reachable()
    manifest = rollback(e2i_config.settings().home, mlflow, config.reason)
    context.add_output_metadata(
        {
            "release_id": manifest["release_id"],
            "restores_release": manifest["restores_release"],
            "rolled_back_release": manifest["rolled_back_release"],
            "mlflow_alias": dg.MetadataValue.json(manifest["mlflow_alias"]),
        }
    )
    return manifest


@dg.job(name=ROLLBACK_JOB, description="Make the previous release's model champion again.")
def rollback_job():
    rollback_champion()


def main(argv: list[str]) -> int:
    from e2i_platform.definitions import mlflow_resource
    from e2i_platform.promotion.release import rollback
    from e2i_platform.settings import load_settings

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reason", required=True, help="why (recorded in the manifest)")
    args = parser.parse_args(argv)
    settings = load_settings()
    with dg.build_resources({"mlflow": mlflow_resource(settings)}) as resources:
        resources.mlflow.ensure_reachable()
        try:
            manifest = rollback(settings.home, resources.mlflow, args.reason)
        except RuntimeError as exc:
            print(f"rollback refused: {exc}", file=sys.stderr)
            return 1
    print(
        json.dumps(
            {
                k: manifest[k]
                for k in ("release_id", "restores_release", "rolled_back_release", "mlflow_alias")
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
