"""A pytest plugin `tests/lanes.py` loads into the lanes after the release lane
(`-p lane_plugin`): it deselects the tests the release lane already ran, so one
`make test` runs no test twice.

``E2I_TEST_RAN`` holds the release list's entries, one per line, each an
absolute file path with an optional ``::test_name`` (a parametrized test's name
covers all its cases). Matching is by path, not by node id, so it holds whatever
rootdir pytest chose.
"""

from __future__ import annotations

import os
from pathlib import Path

RAN_ENV = "E2I_TEST_RAN"


def already_ran(entries: str) -> dict[Path, set[str] | None]:
    """File -> test names run (None: the whole file)."""
    out: dict[Path, set[str] | None] = {}
    for entry in filter(None, entries.splitlines()):
        path, _, name = entry.partition("::")
        key = Path(path).resolve()
        if not name:
            out[key] = None
        elif out.get(key, set()) is not None:
            out.setdefault(key, set()).add(name)
    return out


def pytest_collection_modifyitems(config, items) -> None:
    ran = already_ran(os.environ.get(RAN_ENV, ""))
    if not ran:
        return
    keep, drop = [], []
    for item in items:
        key = Path(item.path).resolve()
        names = ran.get(key, set())
        hit = key in ran and (
            names is None or item.name in names or getattr(item, "originalname", None) in names
        )
        (drop if hit else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
