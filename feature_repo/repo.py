"""Feast objects of the E2I repository, built from e2i_platform.features.specs.

`feast -c feature_repo plan|apply` imports this file; the `feature_registry` asset
applies the same objects. Offline sources are the Parquet files the feature assets
write under the home's warehouse/: $E2I_HOME when set (as `make feast` does), else
the default home next to this folder, where feature_store.yaml points.
"""

import os
from pathlib import Path

from e2i_platform.features.repo_objects import build_objects

_home = os.environ.get("E2I_HOME") or Path(__file__).resolve().parent.parent / ".e2i"
_objects = build_objects(Path(_home).resolve() / "warehouse")
globals().update({obj.name: obj for obj in _objects})
