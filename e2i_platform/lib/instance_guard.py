"""Refuse to materialize on a throwaway Dagster instance.

Without DAGSTER_HOME (and no `.env` giving it), `dagster asset materialize` runs on a
temporary instance that has none of the platform's materializations or gate results
and is deleted when the command exits: every gate would read "never materialized"
and anything written to the warehouse would be recorded nowhere. A step refuses
instead and says how to reach the platform's instance.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

# The directory prefix the Dagster CLIs give their temporary instance (dagster._cli.utils).
CLI_TEMPORARY_PREFIX = ".tmp_dagster_home_"


class ThrowawayInstance(dg.Failure):
    """The run's instance is ephemeral or a CLI's temporary one."""


def throwaway_reason(instance: dg.DagsterInstance) -> str | None:
    """Why `instance` is throwaway, or None for a persistent one."""
    if instance.is_ephemeral:
        return "an ephemeral in-memory Dagster instance"
    root = Path(instance.root_directory)
    if root.name.startswith(CLI_TEMPORARY_PREFIX):
        return f"the temporary Dagster instance {root} (DAGSTER_HOME is not set)"
    return None


def refuse_throwaway_instance(instance: dg.DagsterInstance, asset: str) -> None:
    if reason := throwaway_reason(instance):
        raise ThrowawayInstance(
            description=(
                f"{asset} refused to run on {reason}: it holds none of the platform's "
                "materializations or gate results and is deleted afterwards. Run from the "
                "repository root after `make run` (which keeps DAGSTER_HOME in .env), or set "
                "DAGSTER_HOME to the platform's instance ($E2I_HOME/dagster), or use "
                'make run ARGS="--select ASSETS".'
            )
        )
