"""`make run`: materialize every asset with every gate on the shared instance, then summarise.

Runs in one process (the in-process executor): for a single local run this
avoids re-importing the code location for every step. Runs launched from the UI
or by schedules use the capped multiprocess executor of the definitions.
"""

from __future__ import annotations

import os
import sys
import time


def main() -> int:
    from e2i_platform.ops.instance import prepare_instance
    from e2i_platform.settings import load_settings

    settings = load_settings()
    home = prepare_instance(settings)
    os.environ["DAGSTER_HOME"] = str(home)

    import dagster as dg

    from e2i_platform.definitions import build_definitions
    from e2i_platform.ops.jobs import MAIN_JOB

    defs = build_definitions(settings)
    job = defs.resolve_job_def(MAIN_JOB)
    started = time.perf_counter()
    with dg.DagsterInstance.get() as instance:
        # Step-by-step DEBUG logs stay in the instance (and the UI); the terminal gets a summary.
        quiet = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
        result = job.execute_in_process(instance=instance, run_config=quiet, raise_on_error=False)
    elapsed = time.perf_counter() - started

    materialized = sorted(
        e.asset_key.to_user_string() for e in result.get_asset_materialization_events()
    )
    print(
        f"\nE2I run {result.run_id} ({'SUCCESS' if result.success else 'FAILED'}) "
        f"in {elapsed:.1f}s — env {settings.env}, home {settings.home}"
    )
    print(f"Assets materialized ({len(materialized)}): {', '.join(materialized)}")
    everything = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    if blocked := sorted(everything - set(materialized)):
        print(
            f"Not materialized ({len(blocked)}; a gate or a failed step stopped them): "
            f"{', '.join(blocked)}"
        )
    print("Gate results:")
    for ev in sorted(result.get_asset_check_evaluations(), key=lambda e: str(e.asset_check_key)):
        verdict = "PASS" if ev.passed else f"FAIL ({ev.severity.value})"
        print(f"  {verdict:<12} {ev.asset_key.to_user_string()}.{ev.check_name}: {ev.description}")
    for event in result.all_events:
        if event.is_step_failure:
            print(
                f"  STEP FAILED  {event.step_key}: "
                f"{event.step_failure_data.error.message.strip().splitlines()[0]}"
            )
    print(f"\nOpen the UI: make dev  ->  http://127.0.0.1:3000 (DAGSTER_HOME={home})")
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main())
