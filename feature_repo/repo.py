"""Feast objects of the E2I repository, built from e2i_platform.features.specs.

`feast -c feature_repo plan|apply` imports this file; the `feature_registry` asset
applies the same objects. Offline sources are the Parquet files the feature assets
write under the home's warehouse/: $E2I_HOME when set (as `make feast` does), else
the default home next to this folder, where feature_store.yaml points.

Each view also carries the materialization intervals its registry entry holds: Feast
compares them when it plans (`FeatureView.__eq__`), so without them `feast plan`
after any materialization lists every view as updated although no definition
changed (`feast apply` keeps a view's intervals either way).
"""

import os
from pathlib import Path

from e2i_platform.features.repo_objects import applied_intervals, build_objects

_home = Path(os.environ.get("E2I_HOME") or Path(__file__).resolve().parent.parent / ".e2i")
_objects = build_objects(_home.resolve() / "warehouse", intervals=applied_intervals(_home))
globals().update({obj.name: obj for obj in _objects})
