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


def test_candidate_champion_and_dataset_input_in_postgresql(psycopg2_url, tmp_path):
    """The registry and the dataset input on PostgreSQL's column limits (a dataset digest
    is VARCHAR(36)): our 16-hex content hash, the aliases and the version tags."""
    import pandas as pd
    from mlflow.tracking import MlflowClient

    from e2i_platform.lib.versions import frame_version
    from e2i_platform.promotion.release import move_alias

    tracking = MlflowResource(
        tracking_uri=psycopg2_url,
        experiment="e2i_pg",
        registered_model="e2i_pg",
        home=str(tmp_path),
    )
    frame = pd.DataFrame({"x": [0.1, 0.2, 0.3], "discontinued": [0, 1, 0]})
    run = tracking.start_run("train", {}, {})
    tracking.log_dataset(
        run, frame, "training_dataset", frame_version(frame), targets="discontinued"
    )
    client = MlflowClient(tracking_uri=psycopg2_url, registry_uri=psycopg2_url)
    logged = client.create_logged_model(
        experiment_id=tracking.ensure_reachable(), name="model", source_run_id=run
    )
    version = tracking.register_candidate(f"models:/{logged.model_id}", run, {"e2i.x": "1"})
    tracking.end_run(run)
    (given,) = client.get_run(run).inputs.dataset_inputs
    assert given.dataset.digest == frame_version(frame)
    assert tracking.aliases() == {"challenger": version}

    gates = {"model_evaluation.quality_gate": {"passed": False, "summary": "x" * 5000}}
    move_alias(tracking, version, "20261206T000000000000Z-promotion", "run-1", gates)
    assert tracking.aliases() == {"champion": version}
    tags = client.get_model_version("e2i_pg", version).tags
    assert tags["e2i.role"] == "champion" and tags["e2i.release_dagster_run_id"] == "run-1"
    assert tags["e2i.gate.quality_gate"].startswith("failed: xxx")
    assert len(tags["e2i.gate.quality_gate"]) < 300
