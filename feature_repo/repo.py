"""Feast objects of the E2I repository, built from e2i_platform.features.specs.

`feast -c feature_repo plan|apply` imports this file; the `feature_registry` asset
applies the same objects. Offline sources are the Parquet files the feature assets
write under $E2I_HOME/warehouse/.
"""

import os

from e2i_platform.features.repo_objects import build_objects

if "E2I_HOME" not in os.environ:
    raise RuntimeError("set E2I_HOME (the platform's state directory) before running feast")

_objects = build_objects(os.path.join(os.environ["E2I_HOME"], "warehouse"))
globals().update({obj.name: obj for obj in _objects})
