"""The main job as `make run` executes it: one process, nothing kept in memory.

`JobDefinition.execute_in_process` keeps every step's output in memory until the
run ends (its result can return them); at brand size that is the whole warehouse.
`dagster.execute_job` with the in-process executor runs the same steps in one
process but hands each value only to its IO manager, so a step's data is freed
when the steps that read it are done. `execute_job` needs a job it can rebuild by
name: `main_job` below.
"""

from __future__ import annotations

import dagster as dg


def main_job() -> dg.JobDefinition:
    from e2i_platform.definitions import build_definitions
    from e2i_platform.ops.jobs import MAIN_JOB
    from e2i_platform.settings import load_settings

    defs = build_definitions(load_settings(), executor=dg.in_process_executor)
    return defs.resolve_job_def(MAIN_JOB)


def execute_main_job(instance, selected, run_config, tags) -> dg.JobExecutionResult:
    return dg.execute_job(
        dg.reconstructable(main_job),
        instance=instance,
        asset_selection=selected,
        run_config=run_config,
        tags=tags,
        raise_on_error=False,
    )
