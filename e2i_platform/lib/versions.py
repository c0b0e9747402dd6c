"""Versions that name a result: of the code, of the libraries, of a table's content."""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]

# Tags Dagster writes on every materialization of a versioned asset.
DATA_VERSION_TAG = "dagster/data_version"
CODE_VERSION_TAG = "dagster/code_version"
INPUT_VERSION_PREFIX = "dagster/input_data_version/"


@cache
def code_version(exclude: tuple[str, ...] = ()) -> str:
    """sha256 (16 hex) of every Python source in the package (but the top-level
    folders in `exclude`): it changes exactly when the code does, with or without a
    git checkout."""
    digest = hashlib.sha256()
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.relative_to(PACKAGE).parts[0] in exclude:
            continue
        digest.update(str(path.relative_to(PACKAGE)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


# The configuration sections each asset group reads. How to run (`training.run_mode`)
# is not what is computed, so it is left out; `make run` handles it explicitly.
GROUP_SECTIONS = {
    "ingest": ("platform",),
    "quality": ("platform", "quality"),
    "features": ("platform", "feast"),
    "training": ("training", "optuna", "mlflow"),
    "promotion": ("training", "mlflow", "promotion"),
}


def platform_version(settings, group: str) -> str:
    """The code version of an asset group: the package's code and the resolved
    configuration sections the group reads. Hashed, so nothing in them is shown."""
    # ops/ (run driver, jobs, rollback) decides what runs, never what an asset computes.
    digest = hashlib.sha256(code_version(exclude=("ops",)).encode())
    digest.update(f"{settings.env}|{settings.online_store}".encode())
    for section in GROUP_SECTIONS[group]:
        model = getattr(settings, section)
        exclude = {"run_mode"} if section == "training" else None
        digest.update(section.encode())
        digest.update(model.model_dump_json(exclude=exclude).encode())
    return digest.hexdigest()[:16]


def frame_version(df) -> str:
    """sha256 (16 hex) of a DataFrame's columns, dtypes and values."""
    import pandas as pd

    digest = hashlib.sha256()
    digest.update(repr([(c, str(t)) for c, t in df.dtypes.items()]).encode())
    digest.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]
