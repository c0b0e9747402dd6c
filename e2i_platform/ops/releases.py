"""The releases (in the home, or in the object store every machine shares), each with
its verification status, and the recovery of a `releases/CURRENT` that names a missing
or corrupt manifest:

    make releases                        # python -m e2i_platform.ops.releases
    make releases REPAIR="why"           # ... --repair --reason "why" [--to RELEASE_ID]

Listing reads every `releases/<id>/manifest.json` and says, for each, "verified" (its
content matches its `content_sha256`), "unverified (written before hashes)", or
"BROKEN: ..." with what is wrong; and whether CURRENT names an intact release. It exits
1 when anything is broken.

`--repair` (`promotion.repair.repair`) moves every broken release to
`releases/.set_aside/` with a note, and when CURRENT is broken makes the model of the
newest intact release champion again (or of `--to`): a new release of kind `repair`
(MLflow alias and CURRENT moved, the broken release and its problem recorded), and a
`champion_model` materialization on the platform's Dagster instance, as a rollback is
recorded, so `patient_risk_scores` scores with it and `make run` keeps it.
"""

import argparse
import json
import sys

import dagster as dg

from e2i_platform.lib.pools import pool_for
from e2i_platform.resources.config import ConfigResource
from e2i_platform.resources.mlflow import MlflowResource

REPAIR_JOB = "release_repair"


class RepairConfig(dg.Config):
    reason: str
    to: str = ""  # a release id; empty: the newest intact release


@dg.op(
    description="Set broken release manifests aside; when releases/CURRENT is broken, make "
    "the newest intact release's model champion again (a release of kind repair, recorded "
    "as a champion_model materialization).",
    pool=pool_for("rollback_champion"),  # moves the alias and CURRENT, as a rollback does
)
def repair_releases(
    context: dg.OpExecutionContext,
    config: RepairConfig,
    e2i_config: ConfigResource,
    mlflow: MlflowResource,
) -> dict:
    from e2i_platform.lib.releases import release_store
    from e2i_platform.ops.rollback import record_on_graph
    from e2i_platform.promotion.repair import repair
    from e2i_platform.training.model_run import model_store

    settings = e2i_config.settings()
    mlflow.ensure_reachable()
    try:
        outcome = repair(
            release_store(settings),
            mlflow,
            config.reason,
            config.to or None,
            run_id=context.run_id,
            home=model_store(settings),  # the model files: the home, or the object store
        )
    except RuntimeError as exc:
        raise dg.Failure(f"repair refused: {exc}") from None
    release = outcome["release"]
    if release is not None:
        record_on_graph(context, settings, release)
    context.add_output_metadata(
        {
            "release_id": str(release["release_id"] if release else None),
            "current_was": str(outcome["current_was"]),
            "problem": str(outcome["problem"]),
            "set_aside": dg.MetadataValue.json(outcome["set_aside"]),
        }
    )
    return outcome


@dg.job(name=REPAIR_JOB, description="Recover from a releases/CURRENT that names a broken release.")
def release_repair_job():
    repair_releases()


def listing(store) -> tuple[list[str], bool]:
    """Lines describing every release and CURRENT of `store` (a home, or the object store:
    `lib.releases.release_store`); whether everything is intact."""
    from e2i_platform.lib.releases import (
        REPAIR_COMMAND,
        ReleaseIntegrityError,
        check_manifest,
        current_release,
        current_release_id,
        release_ids,
        releases_dir,
    )

    checks = [check_manifest(store, i) for i in release_ids(store)]
    lines = [f"Releases under {releases_dir(store)} (oldest first):"]
    try:
        current, current_problem = current_release_id(store), None
    except ReleaseIntegrityError as exc:
        current, current_problem = None, str(exc)
    for c in checks:
        model = (c.manifest or {}).get("model", {})
        version = (
            model.get("mlflow", {}).get("model_version") or str(model.get("model_sha256", "?"))[:12]
        )
        kind = (c.manifest or {}).get("kind", "?")
        mark = "  <- CURRENT" if c.release_id == current else ""
        lines.append(f"  {c.release_id:<34} {kind:<9} model {version:<12} {c.status}{mark}")
    if not checks:
        lines.append("  (none)")
    if current is not None and current_problem is None:
        try:
            current_release(store)  # the readers' own verdict, in their words
        except ReleaseIntegrityError as exc:
            current_problem = str(exc)
    if current is None and current_problem is None:
        lines.append("CURRENT: none (no release yet)")
    elif current_problem is None:
        lines.append(f"CURRENT: {current} (intact)")
    else:
        lines.append(f"CURRENT: BROKEN: {current_problem}")
    intact = current_problem is None and all(c.problem is None for c in checks)
    if not intact and REPAIR_COMMAND not in lines[-1]:
        lines.append(f"Recover: {REPAIR_COMMAND}")
    return lines, intact


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="make releases",
        description="List the releases with their verification status; with --repair, set "
        "broken manifests aside and point CURRENT at the newest intact release (recorded as "
        "a release of kind repair and a champion_model materialization).",
    )
    parser.add_argument("--repair", action="store_true", help="recover (needs --reason)")
    parser.add_argument("--reason", default="", help="why (recorded in the repair release)")
    parser.add_argument("--to", default="", help="restore this release instead of the newest")
    args = parser.parse_args(argv)
    if args.repair and not args.reason.strip():
        parser.error("--repair needs --reason saying why")
    if not args.repair and (args.reason or args.to):
        parser.error("--reason and --to go with --repair")

    from e2i_platform.lib.releases import release_store
    from e2i_platform.settings import load_settings

    settings = load_settings()
    if not args.repair:
        lines, intact = listing(release_store(settings))
        print("\n".join(lines))
        return 0 if intact else 1

    from e2i_platform.ops.instance import use_instance

    use_instance(settings)
    from e2i_platform.ops.location import load_definitions

    defs = load_definitions()
    with dg.DagsterInstance.get() as instance:
        result = repair_on(defs, instance, args.reason, args.to)
    if not result.success:
        from e2i_platform.ops.progress import failure_text

        failures = [e for e in result.all_events if e.is_step_failure]
        error = failures[0].step_failure_data.error if failures else None
        print(failure_text(error) if error else "run failed", file=sys.stderr)
        return 1
    outcome = result.output_for_node("repair_releases")
    release = outcome["release"]
    summary = {
        "release_id": release["release_id"] if release else None,
        "restores_release": release["restores_release"] if release else None,
        "current_was": outcome["current_was"],
        "problem": outcome["problem"],
        "set_aside": outcome["set_aside"],
        "mlflow_alias": release["mlflow_alias"] if release else None,
        "dagster_run": result.run_id,
    }
    print(json.dumps(summary, indent=2))
    print("\n".join(listing(release_store(settings))[0]))
    return 0


def repair_on(defs: dg.Definitions, instance, reason: str, to: str = ""):
    """Run the repair job on `instance` with the definitions' resources."""
    return release_repair_job.execute_in_process(
        instance=instance,
        resources=defs.resources,
        run_config={
            "ops": {"repair_releases": {"config": {"reason": reason, "to": to}}},
            "loggers": {"console": {"config": {"log_level": "CRITICAL"}}},
        },
        raise_on_error=False,
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
