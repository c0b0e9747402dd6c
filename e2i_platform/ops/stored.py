"""Whether an asset's stored value is really there: the event log says what was
materialized, the disk says what survived. `make run` reuses nothing whose value
is missing, changed or unreadable (a model file in the models' store, too: the home,
or the object store every machine shares)."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg

from e2i_platform.lib.graph import stored_extension
from e2i_platform.resources.publication import Publications


def stored_value_problem(graph, key: dg.AssetKey, run_id: str, settings) -> str | None:
    """Why the value of `key` materialized in `run_id` cannot be reused, or None."""
    name = key.to_user_string()
    home = Path(settings.home)
    if ext := stored_extension(graph, key):
        pubs = Publications.for_settings(settings)
        if problem := pubs.problem(name, ext, run_id):
            return problem
        if ext == "parquet":
            problem = _parquet_problem(pubs.published_path(name, ext))
        else:
            problem = _record_problem(name, pubs.published_path(name, ext), settings)
        return problem
    if name == "feature_registry":
        from e2i_platform.resources.feast import FeastResource

        # The file registry or the SQL one (another machine may have applied it).
        return FeastResource.for_settings(settings).registry_problem()
    if name == "online_features" and settings.online_store == "sqlite":
        db = home / "feast" / "online_store.db"
        return None if db.exists() else f"the online store {db} is missing"
    return None


def _parquet_problem(path: Path) -> str | None:
    import pyarrow.parquet as pq

    try:
        with path.open("rb") as fh:  # a local file or an object in the shared store
            pq.read_metadata(fh)
    except Exception as exc:  # any reader error: not a usable table
        return f"its published file {path} is not readable Parquet ({type(exc).__name__})"
    return None


def _record_problem(name: str, path: Path, settings) -> str | None:
    """Why a published record cannot be reused: unreadable, or -- for trained_model -- its
    model file (in the models' store: `training.model_run.model_store`) missing or
    changed, or -- for champion_model -- its release manifest broken."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return f"its published record {path} is not readable JSON ({type(exc).__name__})"
    if name == "trained_model":
        from e2i_platform.training.model_run import model_file_mismatch, model_path, model_store

        try:
            model_file = model_path(model_store(settings), record, str(path))
        except (KeyError, ValueError) as exc:
            return f"its model file is not one of this home: {exc}"
        if problem := model_file_mismatch(model_file, record["model_sha256"]):
            return f"its model file {problem}"
    if name == "champion_model":
        from e2i_platform.lib.releases import check_manifest, release_store

        check = check_manifest(release_store(settings), record["release_id"])
        if check.problem is not None:
            return f"its release manifest {check.path} {check.problem}"
    return None
