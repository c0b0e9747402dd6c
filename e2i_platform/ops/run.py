"""`make run`: materialize every asset that is not up to date, with every gate, on the
shared instance, then summarise.

An asset whose code, configuration and inputs are unchanged since its last
materialization, and whose own gates passed on it, is reused rather than recomputed
(`ops.reuse`); each reuse is printed with the materialization it keeps and recorded
as an observation in the instance. `--all` materializes everything regardless.

The run is an ordinary run of the code location in workspace.yaml, launched by
the instance (`ops.launch`): the UI shows it on its timeline and can re-execute it.
It executes in one run worker process (the in-process executor): one import of the
code for the whole run. Runs launched from the UI or by schedules use capped
parallel processes. The Dagster CLIs find the same instance through `.env` (written
here, for the default home). At its start, a run left STARTED whose worker processes
are gone (killed) is marked FAILED, with a message saying so, and its pool slots freed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def main(argv: list[str] | None = None) -> int:
    intro, _, details = __doc__.partition("\n\n")
    parser = argparse.ArgumentParser(
        prog="make run",
        description=" ".join(intro.split()),
        epilog=" ".join(details.split()),
    )
    parser.add_argument(
        "--all", action="store_true", help="materialize every asset, up to date or not"
    )
    parser.add_argument(
        "--select",
        metavar="ASSETS",
        help="materialize only these assets (comma-separated names), with their gates, "
        'up to date or not: make run ARGS="--select training_dataset,hpo_study"',
    )
    args = parser.parse_args(argv)

    from e2i_platform.ops.instance import use_instance
    from e2i_platform.settings import load_settings

    settings = load_settings()
    home = use_instance(settings)

    from e2i_platform.lib.known_warnings import ignore_known, with_known_ignored

    # Here and in the code server and run worker this process starts.
    ignore_known()
    os.environ.update(with_known_ignored(dict(os.environ)))

    import dagster as dg

    from e2i_platform.ops.instance import write_dotenv
    from e2i_platform.ops.launch import RunOutcome, code_location, launch, wait
    from e2i_platform.ops.location import load_definitions
    from e2i_platform.ops.progress import LAUNCH_TAG, Progress
    from e2i_platform.ops.reuse import plan_run, report_reuse, run_mode_forces
    from e2i_platform.ops.run_monitoring import fail_dead_runs

    defs = load_definitions()
    write_dotenv(settings, home)
    started = time.perf_counter()
    with dg.DagsterInstance.get() as instance:
        # Runs left STARTED by a worker that was killed end now (and alert), and stop
        # holding their pools, even when no daemon runs to notice them.
        for line in fail_dead_runs(instance):
            print(f"E2I: marked FAILED {line}", flush=True)
        decisions = plan_run(
            defs,
            instance,
            defs.resources["source"],
            settings,
            forced=run_mode_forces(settings.training.run_mode),
        )
        if args.all:
            decisions = [d.__class__(d.asset, True, "--all") for d in decisions]
        if args.select:
            decisions = _select(parser, decisions, args.select)
        selected = [dg.AssetKey.from_user_string(d.asset) for d in decisions if d.run]
        result = None
        celery = settings.platform.executor.kind == "celery"
        if selected and celery:
            print(
                "E2I: steps run on the Celery workers of queue "
                f"{settings.platform.executor.celery_queue!r} (start them with make worker)",
                flush=True,
            )
        if selected:
            # Step-by-step DEBUG logs stay in the instance (and the UI); the terminal gets
            # a line per finished step and a summary.
            quiet = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
            print(
                f"E2I: running {len(selected)} asset(s), reusing {len(decisions) - len(selected)}"
                " (a line per finished step follows)",
                flush=True,
            )
            with Progress(instance) as progress, code_location(instance) as (context, location):
                run_id = launch(
                    instance,
                    context,
                    location,
                    selected,
                    quiet,
                    {
                        "e2i/reused_assets": str(len(decisions) - len(selected)),
                        "e2i/launched_by": "make run",
                        LAUNCH_TAG: progress.launch_id,
                    },
                    in_process=not celery,
                )
                wait(instance, run_id)
            result = RunOutcome.read(instance, run_id)
        report_reuse(instance, decisions, f"make run {result.run_id if result else '(no run)'}")
        elapsed = time.perf_counter() - started
        ok, stopped_by = _summarise(instance, defs, decisions, result, settings, elapsed)
    _ending(settings, stopped_by)
    print(f"\nOpen the UI: make dev  ->  http://127.0.0.1:3000 (DAGSTER_HOME={home})")
    return 0 if ok else 1


def _select(parser, decisions: list, names: str) -> list:
    """Decisions for `--select`: the named assets run; the others are reused when up to
    date and otherwise left out (listed, so nothing is skipped silently)."""
    wanted = {n.strip() for n in names.split(",") if n.strip()}
    known = {d.asset for d in decisions}
    if unknown := sorted(wanted - known):
        parser.error(
            f"--select: unknown asset(s) {', '.join(unknown)}; assets: {', '.join(sorted(known))}"
        )
    for d in decisions:
        if d.run and d.asset not in wanted:
            print(f"  not selected  {d.asset}: would run ({d.reason})")
    return [
        d.__class__(d.asset, True, "--select") if d.asset in wanted else d
        for d in decisions
        if d.asset in wanted or not d.run
    ]


def _ending(settings, stopped_by: list[str]) -> None:
    """What matters after a run: the release in service, what stopped, what to do next."""
    from e2i_platform.lib.releases import (
        ReleaseIntegrityError,
        current_release,
        manifest_path,
        release_store,
        verification,
    )

    store = release_store(settings)
    try:
        release, broken = current_release(store), None
    except ReleaseIntegrityError as exc:
        release, broken = None, str(exc)
    print()
    if broken is not None:
        print(f"Champion: UNUSABLE: {broken}")
    elif release is None:
        print("Champion: none released yet (releases/CURRENT does not exist)")
    else:
        model = release.get("model", {})
        version = model.get("mlflow", {}).get("model_version") or model.get("model_sha256", "")[:12]
        auc = release.get("metrics", {}).get("roc_auc")
        auc_text = f", test ROC-AUC {auc:.4f}" if isinstance(auc, int | float) else ""
        manifest = manifest_path(store, release["release_id"])
        print(
            f"Champion: release {release['release_id']} ({release.get('kind', 'promotion')}), "
            f"model version {version}{auc_text}; manifest {manifest} ({verification(release)})"
        )
    if stopped_by:
        print(f"Stopped by: {'; '.join(stopped_by)}")
        print(
            "Next: read the evidence above (or the asset's Checks tab in the UI), fix the data "
            "or the threshold it names, then make run again"
        )
    else:
        print("Next: make dev to browse the run, or make run again after the data change")


def _summarise(instance, defs, decisions, result, settings, elapsed) -> tuple[bool, list[str]]:
    """Print the summary; whether the run succeeded, and the blocking gates that failed in it."""
    from e2i_platform.ops.progress import failure_text, one_line

    selected = [d for d in decisions if d.run]
    reused = [d for d in decisions if not d.run]
    if result is None:
        print(
            f"\nE2I: nothing to run, every asset is up to date ({elapsed:.1f}s) "
            f"— env {settings.env}, home {settings.home}"
        )
    else:
        print(
            f"\nE2I run {result.run_id} ({'SUCCESS' if result.success else 'FAILED'}) "
            f"in {elapsed:.1f}s — env {settings.env}, home {settings.home}"
        )
    materialized = result.materialized() if result else []
    print(f"Assets materialized ({len(materialized)}): {', '.join(materialized) or '-'}")
    for d in selected:
        print(f"  ran      {d.asset}: {d.reason}")
    if reused:
        print(f"Assets reused ({len(reused)}, unchanged code, config and inputs; gates passed):")
        for d in reused:
            print(f"  reused   {d.asset}: {d.reason}")
    if blocked := sorted({d.asset for d in selected} - set(materialized)):
        print(
            f"Not materialized ({len(blocked)}; a gate or a failed step stopped them): "
            f"{', '.join(blocked)}"
        )
    stopped_by = []
    print("Gate results:")
    evaluated = {}
    if result:
        evaluated = {e.asset_check_key: e for e in result.check_evaluations()}
    reused_assets = {d.asset for d in reused}
    for key in sorted(defs.resolve_asset_graph().asset_check_keys, key=str):
        ev, suffix = evaluated.get(key), ""
        if ev is None:
            # Not evaluated in this run: show the kept result of a reused asset.
            if key.asset_key.to_user_string() not in reused_assets:
                continue
            record = instance.get_latest_asset_check_evaluation_record(key)
            if record is None or record.evaluation is None:
                continue
            ev, suffix = record.evaluation, f" [reused, run {record.run_id[:8]}]"
        verdict = "PASS" if ev.passed else f"FAIL ({ev.severity.value})"
        label = f"{key.asset_key.to_user_string()}.{key.name}"
        if not ev.passed and ev.severity.value == "ERROR" and not suffix:
            stopped_by.append(f"{label} ({one_line(ev.description)})")
        print(f"  {verdict:<12} {label}: {ev.description}{suffix}")
    if result:
        failures = result.step_failures()
        for event in failures:
            print(f"  STEP FAILED  {event.step_key}: {failure_text(event.step_failure_data.error)}")
        if not result.success and not failures:
            print(f"  RUN FAILED   {one_line(result.run_failure() or 'no message recorded')}")
    return result is None or result.success, stopped_by


if __name__ == "__main__":
    sys.exit(main())
