"""The identity of a training run: two fingerprints, sha256 of canonical JSON.

The spec fingerprint names *what* is trained (training config, data versions of the
training set, feature service); the exec fingerprint names *how* (code version,
library versions, seed). Their first 8 hex digits name a run's directory
(`training.runs.ModelRuns`).
"""

from __future__ import annotations

import hashlib
import json
from importlib import metadata as importlib_metadata
from typing import Any

DEFAULT_LIBRARIES = ("lightgbm", "scikit-learn", "optuna", "mlflow", "pandas", "numpy", "feast")
NOT_INSTALLED = "not-installed"


def fingerprint(payload: Any) -> str:
    """sha256 hex of the payload as canonical JSON (sorted keys, no whitespace)."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def spec_fingerprint(
    training_config: dict, data_versions: dict[str, str], feature_service: dict
) -> str:
    """What is trained: the training config, the data versions behind the training set, the feature service."""
    return fingerprint(
        {
            "training_config": training_config,
            "data_versions": data_versions,
            "feature_service": feature_service,
        }
    )


def exec_fingerprint(code_version: str, libraries: dict[str, str], seed: int) -> str:
    """How it is trained: the code version, the library versions, the seed."""
    return fingerprint({"code_version": code_version, "libraries": libraries, "seed": seed})


def library_versions(names: tuple[str, ...] | list[str] = DEFAULT_LIBRARIES) -> dict[str, str]:
    """Installed version of each distribution; `not-installed` when it is absent."""
    versions: dict[str, str] = {}
    for name in names:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = NOT_INSTALLED
    return versions
