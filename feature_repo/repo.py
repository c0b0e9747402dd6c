"""Feast objects of the E2I repository, built from e2i_platform.features.specs.

`feast -c feature_repo plan|apply` imports this file; the `feature_registry` asset
applies the same objects. Offline sources are the Parquet files the feature assets
write under the home's warehouse/: $E2I_HOME when set (as `make feast` does), else
the default home next to this folder, where feature_store.yaml points.

A registry that came with a copy of another home (a restore elsewhere) first has its
recorded SQLite online tables pointed at this home's database, before Feast plans:
`feast apply` would otherwise tear them down in the other home's database.

Each view also carries the materialization intervals its registry entry holds: Feast
compares them when it plans (`FeatureView.__eq__`), so without them `feast plan`
after any materialization lists every view as updated although no definition
changed (`feast apply` keeps a view's intervals either way).
"""

import os
import sys
from pathlib import Path

from e2i_platform.features.repo_objects import (
    applied_intervals,
    build_objects,
    repo_offline_dir,
    repoint_registry,
)

_home = Path(os.environ.get("E2I_HOME") or Path(__file__).resolve().parent.parent / ".e2i")
# A registry restored from another home names that home's online tables: `feast apply`
# would drop them there. They are this home's before Feast plans anything.
if _moved := repoint_registry(_home):
    print(
        f"feature registry: online tables recorded at {', '.join(_moved)} are now this "
        f"home's ({_home / 'feast'})",
        file=sys.stderr,
    )
# The warehouse the feature_registry asset names: the home's, or the shared store's.
_objects = build_objects(repo_offline_dir(_home), intervals=applied_intervals(_home))
globals().update({obj.name: obj for obj in _objects})
