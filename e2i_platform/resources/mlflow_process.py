"""MLflow's process-wide state: environment variables, the fluent tracking URI and the
artifact repository cache. Our resource never relies on them; where MLflow itself reads
them, they are changed only under one lock, for one block, and restored exactly."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

_GLOBAL_STATE_LOCK = threading.RLock()


@contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of the block, then restore them."""
    with _GLOBAL_STATE_LOCK:
        saved = {key: os.environ.get(key) for key in values}
        os.environ.update(values)
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


@contextmanager
def fluent_tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's global tracking URI at `uri` for the block, then restore it exactly.

    `mlflow.set_tracking_uri` also writes (or, for None, deletes) MLFLOW_TRACKING_URI, so
    both the module global and the variable are saved and put back.
    """
    import mlflow
    from mlflow.tracking._tracking_service import utils as tracking_utils

    with _GLOBAL_STATE_LOCK:
        saved_global = getattr(tracking_utils, "_tracking_uri", None)
        saved_env = os.environ.get("MLFLOW_TRACKING_URI")
        mlflow.set_tracking_uri(uri)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(saved_global)
            if saved_env is None:
                os.environ.pop("MLFLOW_TRACKING_URI", None)
            else:
                os.environ["MLFLOW_TRACKING_URI"] = saved_env


def forget_artifact_repositories() -> None:
    """Drop MLflow's process-wide cache of artifact repositories: it is keyed by run or
    model id alone, so after a re-rooting a cached one still points at the old root."""
    from mlflow.tracking._tracking_service import utils

    getattr(utils, "_artifact_repos_cache", {}).clear()
