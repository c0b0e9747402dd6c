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
# is not what is computed, so it is left out; `make run` handles it explicitly. Nor is
# where links point (`mlflow.ui_url`) or where MLflow keeps artifacts (`artifact_root`).
GROUP_SECTIONS = {
    "ingest": ("platform",),
    "quality": ("platform", "quality"),
    "features": ("platform", "feast"),
    "training": ("training", "optuna", "mlflow"),
    "promotion": ("training", "mlflow", "promotion"),
}
# Where things run and are kept (which home, executor, stores, retries, schedules) is
# not what an asset computes: a value made on one machine, or before the deployment
# moved to workers and shared stores, is still the same value.
_DEPLOYMENT = ("home", "executor", "retries", "instance", "store", "schedules_running")
NOT_COMPUTED = {
    "training": {"run_mode": True},
    "mlflow": {"ui_url": True, "artifact_root": True},
    "platform": {**dict.fromkeys(_DEPLOYMENT, True), "feature_store": {"registry": True}},
}


def platform_version(settings, group: str) -> str:
    """The code version of an asset group: the package's code and the resolved
    configuration sections the group reads. Hashed, so nothing in them is shown."""
    # ops/ (run driver, jobs, rollback) decides what runs, never what an asset computes.
    digest = hashlib.sha256(code_version(exclude=("ops",)).encode())
    digest.update(f"{settings.env}|{settings.online_store}".encode())
    for section in GROUP_SECTIONS[group]:
        model = getattr(settings, section)
        exclude = NOT_COMPUTED.get(section)
        digest.update(section.encode())
        digest.update(model.model_dump_json(exclude=exclude).encode())
    return digest.hexdigest()[:16]


def sha256_file(path) -> str:
    """Hex sha256 of a file (a local path, or a `UPath` in an object store), read in
    blocks."""
    digest = hashlib.sha256()
    with (path if hasattr(path, "fs") else Path(path)).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_mismatch(path, sha256: str) -> str | None:
    """Why `path` does not hold the bytes `sha256` names (missing, or other bytes), or None."""
    path = path if hasattr(path, "fs") else Path(path)  # a local file or a store object
    if not path.exists():
        return f"{path} is missing"
    if sha256_file(path) != sha256:
        return f"{path} is not the expected file (its sha256 is not {sha256[:12]}…)"
    return None


def frame_version(df) -> str:
    """sha256 (16 hex) of a DataFrame's columns, dtypes and values."""
    import pandas as pd

    digest = hashlib.sha256()
    digest.update(repr([(c, str(t)) for c, t in df.dtypes.items()]).encode())
    digest.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


def judged_config(settings, check_key) -> object:
    """The configuration a check applies: what its verdict is judged under. A check
    this does not know has no version, and its verdict never holds."""
    name, asset = check_key.name, check_key.asset_key.to_user_string()
    if name == "schema":
        # Which source the raw table may come from is part of what passed: a pass on
        # generated rows does not hold once the table must come from a landing file.
        table = asset.removeprefix("raw_")
        return {
            "future_tolerance_minutes": settings.quality.future_tolerance_minutes,
            "source_policy": settings.platform.sources.policy(table),
        }
    if name == "expectations":
        return settings.quality.tables[asset].model_dump(mode="json")
    if name == "references_resolve":
        return None  # the contract's foreign keys: code
    if name == "freshness":
        # Which store was measured is part of the verdict: another one was not.
        return {
            **settings.feast.model_dump(mode="json", include={"freshness", "views", "sample_size"}),
            "online_store": settings.online_store,
            "redis": _redis_target() if settings.online_store == "redis" else None,
        }
    if name == "no_leakage":
        return settings.training.model_dump(mode="json", include={"leakage", "dataset"})
    if name in type(settings.promotion).model_fields:
        return getattr(settings.promotion, name).model_dump(mode="json")
    raise KeyError(f"no configuration is known for check {name} on {asset}")


def judged_version(settings, check_key) -> str:
    """Version (16 hex) of a check's code and of the configuration it applies."""
    import json

    digest = hashlib.sha256(code_version(exclude=("ops",)).encode())
    digest.update(f"{settings.env}|{check_key.name}".encode())
    digest.update(json.dumps(judged_config(settings, check_key), sort_keys=True).encode())
    return digest.hexdigest()[:16]


def _redis_target() -> str | None:
    """host:port/db of REDIS_URL, never its password."""
    import os
    from urllib.parse import urlsplit

    url = os.environ.get("REDIS_URL")
    if not url:
        return None
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 6379}/{parts.path.lstrip('/') or 0}"
