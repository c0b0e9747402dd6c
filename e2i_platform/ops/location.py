"""The code location's Definitions, for the command-line entry points.

`make run` (the asset graph, the source resource), `make rollback` (the rollback job
and its resources), `make releases REPAIR=...` (the resources) and `make report`
(the asset graph) work on the code location itself. They load it the way Dagster's
own tools do (`dagster asset materialize -m ...`, the code server behind `make dev`):
by the module name the project declares (`[tool.dagster] module_name` in
pyproject.toml, the module workspace.yaml serves too), through Dagster's loader,
which imports that module and calls its `@dg.definitions` function.

They never import `e2i_platform.definitions`. The root assembles every stage, `ops`
included (the jobs, schedules and sensors of this package), so an `ops` module that
imported the root would close a package circle: ops -> definitions -> ops. Here the
root stays what it is for Dagster, an entry point nothing imports
(tests/preflight/test_stage_imports.py), and the command lines are its clients by
name, like the Dagster CLI. The Definitions are built from the same environment as
the caller's settings (`load_settings()`), so both see the same home and config.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import dagster as dg

from e2i_platform.settings.loader import REPO_ROOT

PYPROJECT = REPO_ROOT / "pyproject.toml"


def location_module(pyproject: Path = PYPROJECT) -> str:
    """The module of the code location, as pyproject.toml declares it for Dagster."""
    try:
        with pyproject.open("rb") as f:
            return tomllib.load(f)["tool"]["dagster"]["module_name"]
    except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError) as exc:
        raise RuntimeError(
            f"{pyproject}: cannot read the code location's module ([tool.dagster] "
            f"module_name): {type(exc).__name__}: {exc}. The command lines run from a "
            "checkout of the project (make run), not from an installed package."
        ) from None


def load_definitions(pyproject: Path = PYPROJECT) -> dg.Definitions:
    """The code location's Definitions, loaded as Dagster loads a `-m` module."""
    from dagster._core.workspace.autodiscovery import loadable_targets_from_python_module

    module = location_module(pyproject)
    targets = loadable_targets_from_python_module(module, str(pyproject.parent))
    if len(targets) != 1:
        raise RuntimeError(f"code location {module}: {len(targets)} definitions found, not one")
    found = targets[0].target_definition
    defs = found if isinstance(found, dg.Definitions) else found()  # @dg.definitions: lazy
    if not isinstance(defs, dg.Definitions):
        raise RuntimeError(f"code location {module}: {targets[0].attribute} is not Definitions")
    return defs
