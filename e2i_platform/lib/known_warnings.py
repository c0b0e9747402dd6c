"""Warnings we can do nothing about, kept out of the terminal and the UI's log.

Dagster reads its own deprecated `ScheduleDefinition.environment_vars` each time a code
server snapshots the location (dagster 1.13.27: every reload, and with each sensor
tick under `make dev`); `use_user_code_server` and `Output(data_version=...)` are beta
by Dagster's label only. Filters set when the definitions are imported do not always
hold: Dagster may import user code inside `warnings.catch_warnings()`, which drops them
on exit. So the processes `make run` and `make dev` start also get them through
PYTHONWARNINGS, which every interpreter reads at start-up.
"""

from __future__ import annotations

import warnings

# The start of each message (matched literally, case-insensitively, as -W does).
KNOWN = (
    "Property `ScheduleDefinition.environment_vars` is deprecated",
    "Parameter `use_user_code_server` of initializer",
    "Parameter `data_version` of initializer `Output.__init__`",
)


def ignore_known() -> None:
    import re

    for message in KNOWN:
        warnings.filterwarnings("ignore", message=re.escape(message))


def with_known_ignored(env: dict[str, str]) -> dict[str, str]:
    """`env` with PYTHONWARNINGS ignoring the known warnings (other entries kept)."""
    entries = [e for e in env.get("PYTHONWARNINGS", "").split(",") if e]
    entries += [f"ignore:{message}" for message in KNOWN]
    return {**env, "PYTHONWARNINGS": ",".join(dict.fromkeys(entries))}
