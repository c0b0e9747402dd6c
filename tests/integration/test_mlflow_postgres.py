"""MLflow tracked in PostgreSQL (a real server): artifacts go under the home (or the
configured root), never to ./mlruns of the working directory; a second home on the same
database is refused with both locations named, and the shared rows are left alone."""

from __future__ import annotations

import dagster as dg
import pytest

from e2i_platform.resources.mlflow import MlflowResource

pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")


def test_a_database_backed_store_keeps_artifacts_under_the_home(
    psycopg2_url, tmp_path, monkeypatch
):
    from mlflow.tracking import MlflowClient

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # where MLflow's default artifact root (./mlruns) would be
    home = tmp_path / "home"
    tracking = MlflowResource(
        tracking_uri=psycopg2_url, experiment="e2i_pg", registered_model="e2i_pg", home=str(home)
    )
    run = tracking.start_study_run("study", {"n_trials": 1}, {})
    tracking.log_dict(run, {"threshold": 0.5}, "decision.json")
    tracking.end_run(run)
    root = home / "mlflow" / "artifacts"
    client = MlflowClient(tracking_uri=psycopg2_url)
    assert client.get_experiment_by_name("e2i_pg").artifact_location == root.as_uri()
    assert (root / run / "artifacts" / "decision.json").is_file()
    assert list(cwd.iterdir()) == []

    # Another home on the same database: the experiment's artifacts are not under it, and
    # the database may still serve the first home, so nothing is rewritten.
    other = tracking.model_copy(update={"home": str(tmp_path / "other")})
    with pytest.raises(dg.Failure) as caught:
        other.start_study_run("study", {}, {})
    assert root.as_uri() in caught.value.description
    assert (tmp_path / "other" / "mlflow" / "artifacts").as_uri() in caught.value.description
    assert client.get_run(run).info.artifact_uri == f"{root.as_uri()}/{run}/artifacts"
    # Configured to the recorded location, it is used as it is.
    shared = other.model_copy(update={"artifact_root": str(root)})
    assert shared.ensure_reachable() == client.get_experiment_by_name("e2i_pg").experiment_id

    # Without a home or a configured root there is no place for artifacts: refused.
    nowhere = tracking.model_copy(update={"home": None, "experiment": "e2i_pg_new"})
    with pytest.raises(dg.Failure, match="no artifact root"):
        nowhere.ensure_reachable()
    assert list(cwd.iterdir()) == []
