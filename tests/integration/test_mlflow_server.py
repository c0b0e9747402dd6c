"""MLflow as a tracking server on PostgreSQL with proxied artifacts (a real `mlflow
server`, `tests/mlflow_server.py`): a machine that trains writes nothing of MLflow's to
its own disk. The study, its trial, the training run with its dataset input, the LightGBM
model and the registry's aliases and version tags all go through the server: runs and
the registry to the database, the model's files to the server's artifacts destination
(`mlflow-artifacts:/`). The client's E2I home, HOME, working directory and temp
directory are empty afterwards. An experiment whose artifacts are a path (made before,
by a direct PostgreSQL client) is refused, naming it: through a server, each client
would write it on its own disk."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from mlflow_server import mlflow_server

from e2i_platform.lib.versions import frame_version
from e2i_platform.resources.mlflow import MlflowResource
from e2i_platform.resources.mlflow_registry import CHALLENGER_ALIAS, CHAMPION_ALIAS

pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")

MODEL = "e2i_served"


def entries(root: Path) -> list[str]:
    """Everything under `root` (files and directories), relative to it."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def booster_and_frame():
    import lightgbm as lgb

    rng = np.random.default_rng(7)
    frame = pd.DataFrame({"x": rng.normal(size=300), "z": rng.normal(size=300)})
    frame["discontinued"] = (frame["x"] + 0.3 * rng.normal(size=300) > 0).astype(int)
    features = frame[["x", "z"]]
    params = {"objective": "binary", "verbose": -1, "num_threads": 1}
    booster = lgb.train(params, lgb.Dataset(features, frame["discontinued"]), num_boost_round=5)
    return booster, frame, features


def test_a_trained_model_goes_through_the_server_and_nothing_to_the_clients_disk(
    psycopg2_url, tmp_path, monkeypatch
):
    import lightgbm as lgb
    import mlflow.artifacts

    # MLflow's REST client loads request-header plugins on its first request, and the
    # installed feast registers one: importing feast makes a `feast_metrics_*` temp dir
    # (removed at exit). That is feast's, not MLflow's: load the plugins before the
    # temp directory is watched.
    import mlflow.tracking.request_header.registry  # noqa: F401
    from mlflow.tracking import MlflowClient

    artifacts = tmp_path / "server" / "artifacts"
    home, user_home, cwd, temp = (tmp_path / "client" / d for d in ("home", "HOME", "cwd", "tmp"))
    for path in (home, user_home, cwd, temp):
        path.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(user_home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.chdir(cwd)  # where MLflow's defaults (./mlruns, ./mlflow.db) would go
    monkeypatch.setattr(tempfile, "tempdir", str(temp))  # MLflow's scratch files
    booster, frame, features = booster_and_frame()

    with mlflow_server(psycopg2_url, artifacts, tmp_path / "server" / "work") as server:
        tracking = MlflowResource(
            tracking_uri=server, experiment="e2i_served", registered_model=MODEL, home=str(home)
        )
        experiment_id = tracking.ensure_reachable()
        study = tracking.start_study_run("study", {"n_trials": 1}, {"e2i.kind": "study"})
        trial = tracking.log_trial(
            study,
            0,
            {"learning_rate": 0.1},
            [(0, 0.61), (1, 0.66)],
            {"valid_auc": 0.66},
            "COMPLETE",
        )
        tracking.end_run(study)

        run = tracking.start_run("train-v1", {"learning_rate": 0.1}, {"e2i.kind": "training"})
        content_hash = frame_version(frame)
        tracking.log_dataset(run, frame, "training_dataset", content_hash, targets="discontinued")
        tracking.log_metrics(run, {"valid_auc": 0.66})
        model_uri = tracking.log_model(run, booster, features.head(5), ["lightgbm==4.7.0"])
        version = tracking.register_candidate(model_uri, run, {"e2i.training_set": content_hash})
        tracking.end_run(run)

        fresh = MlflowClient(tracking_uri=server, registry_uri=server)
        assert fresh.get_registered_model(MODEL).aliases == {CHALLENGER_ALIAS: version}
        moved = tracking.move_champion(version, {"e2i.release_id": "release-1"})
        assert moved["challenger_removed"] == version

        # Read back through a client of its own: the registry, the runs, the input.
        fresh = MlflowClient(tracking_uri=server, registry_uri=server)
        assert fresh.get_registered_model(MODEL).aliases == {CHAMPION_ALIAS: version}
        assert fresh.get_model_version_by_alias(MODEL, CHAMPION_ALIAS).version == version
        tags = fresh.get_model_version(MODEL, version).tags
        assert tags["e2i.role"] == "champion" and tags["e2i.release_id"] == "release-1"
        assert tags["e2i.training_set"] == content_hash
        trained = fresh.get_run(run)
        assert trained.info.experiment_id == experiment_id
        assert trained.info.artifact_uri == f"mlflow-artifacts:/{experiment_id}/{run}/artifacts"
        (given,) = trained.inputs.dataset_inputs
        assert given.dataset.digest == content_hash
        assert trained.data.metrics["valid_auc"] == 0.66
        nested = fresh.get_run(trial)
        assert nested.data.tags["mlflow.parentRunId"] == study
        assert nested.data.metrics["valid_auc"] == 0.66
        source = fresh.get_model_version(MODEL, version).source
        assert source.startswith(f"mlflow-artifacts:/{experiment_id}/models/")

        # The model is in the server's artifacts destination, and it is this booster.
        (model_file,) = artifacts.rglob("model.lgb")
        model_id = model_uri.removeprefix("models:/")
        assert model_file.parent == artifacts / experiment_id / "models" / model_id / "artifacts"
        served = lgb.Booster(model_file=str(model_file))
        np.testing.assert_allclose(served.predict(features), booster.predict(features))
        # A scoring machine gets it by alias through the server: the alias resolved by its
        # client (MLflow resolves `models:/<name>@<alias>` with the global registry URI,
        # whatever registry_uri it is given), the files downloaded from its source.
        champion = fresh.get_model_version_by_alias(MODEL, CHAMPION_ALIAS)
        downloaded = mlflow.artifacts.download_artifacts(
            champion.source, dst_path=str(tmp_path / "scoring"), tracking_uri=server
        )
        assert (Path(downloaded) / "model.lgb").read_bytes() == model_file.read_bytes()

        # Nothing of MLflow's on the client's disk: its home, HOME, cwd, temp files.
        for place in (home, user_home, cwd, temp):
            assert entries(place) == [], place

        # An experiment made by a direct PostgreSQL client, its artifacts a path: through
        # the server each client would write there on its own disk. Refused, named.
        local_root = (tmp_path / "client" / "elsewhere").as_uri()
        with warnings.catch_warnings():
            # MLflow's SQLAlchemy mappers; the module's filter is not enough here: feast,
            # imported above, puts `simplefilter("once", DeprecationWarning)` first.
            warnings.filterwarnings("ignore", "The ``noload`` loader strategy")
            direct = MlflowClient(tracking_uri=psycopg2_url)
            direct.create_experiment("e2i_direct", artifact_location=local_root)
        old = tracking.model_copy(update={"experiment": "e2i_direct"})
        with pytest.raises(dg.Failure, match="serve-artifacts") as refused:
            old.start_run("train-v2", {}, {})
        assert local_root in refused.value.description
        assert not (tmp_path / "client" / "elsewhere").exists()
        assert len(fresh.search_runs([experiment_id])) == 3  # no run added by the refusal
