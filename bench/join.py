"""One point-in-time join of a `make run` home's training entity rows, for bench/scale.py:
`python bench/join.py duckdb|dask <E2I_HOME> <out.parquet>`.

duckdb: the platform's join (`training.dataset.join_features`: DuckDB ASOF joins).
dask: the join it replaced — Feast's file (Dask) offline store, one request per view
and distinct key/time, merged back onto every entity row.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def dask_store(feast):
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

    values = feast.config_values()
    values["offline_store"] = {"type": "file"}
    config = RepoConfig(**values)
    config.repo_path = Path(feast.repo_path)
    return FeatureStore(repo_path=feast.repo_path, config=config)


def dask_join(store, entity_rows):
    import pandas as pd

    from e2i_platform.features.specs import FEATURE_SERVICE, VIEWS
    from e2i_platform.training.dataset import CUTOFF

    service = store.get_feature_service(FEATURE_SERVICE)
    full = entity_rows.reset_index(drop=True)
    for projection in service.feature_view_projections:
        view = projection.name
        keys = [*VIEWS[view].join_keys, CUTOFF]
        joined = store.get_historical_features(
            entity_df=full[keys].drop_duplicates(),
            features=[f"{view}:{f.name}" for f in projection.features],
            full_feature_names=True,
        ).to_df()
        columns = [f"{view}__{f.name}" for f in projection.features]
        joined[CUTOFF] = pd.to_datetime(joined[CUTOFF], utc=True)
        full = full.merge(joined[[*keys, *columns]], on=keys, how="left", validate="many_to_one")
    return full.sort_values([CUTOFF, "patient_id"], ignore_index=True)


def main(kind: str, home: str, out: str) -> None:
    import pandas as pd

    from e2i_platform.resources.feast import FeastResource
    from e2i_platform.settings import load_settings
    from e2i_platform.training.dataset import CUTOFF, ENTITY_COLUMNS, LABEL, join_features

    settings = load_settings()
    feast = FeastResource(
        home=home, project=settings.platform.feature_store.project, online_store="sqlite"
    )
    dataset = pd.read_parquet(Path(home) / "warehouse" / "training_dataset.parquet")
    entity_rows = dataset[[*ENTITY_COLUMNS, CUTOFF, LABEL]]
    store = feast.store() if kind == "duckdb" else dask_store(feast)
    started = time.perf_counter()
    if kind == "duckdb":
        joined, _ = join_features(store, entity_rows)
    else:
        joined = dask_join(store, entity_rows)
    seconds = time.perf_counter() - started  # the join alone, without imports
    joined.to_parquet(out, index=False)
    Path(out).with_suffix(".json").write_text(json.dumps({"join_s": seconds}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
