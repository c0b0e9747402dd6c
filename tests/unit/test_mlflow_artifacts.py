"""Where MLflow keeps artifacts, against real MLflow on SQLite: a home copied to another
path re-roots its own tracking DB (new runs and models land in the copy; the original
is untouched), and an experiment whose artifacts are anywhere else is refused with both
locations named."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import dagster as dg
import pytest

from e2i_platform.resources.mlflow import MlflowResource
from e2i_platform.resources.mlflow_artifacts import artifact_root_uri

# MLflow's own SQLAlchemy mapper setup, not ours.
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")

EXPERIMENT = "e2i_test"
MODEL = "e2i_test_model"


def _home(home: Path, template_db: Path) -> MlflowResource:
    """A home whose tracking DB is the default one, `<home>/mlflow/mlflow.db`."""
    db = home / "mlflow" / "mlflow.db"
    db.parent.mkdir(parents=True)
    shutil.copyfile(template_db, db)
    return MlflowResource(
        tracking_uri=f"sqlite:///{db}",
        experiment=EXPERIMENT,
        registered_model=MODEL,
        home=str(home),
    )


def _client(resource: MlflowResource):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=resource.tracking_uri, registry_uri=resource.tracking_uri)


def _tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_a_home_copied_elsewhere_re_roots_its_own_tracking_db(tmp_path, template_db):
    original = tmp_path / "original"
    tracking = _home(original, template_db)
    run = tracking.start_study_run("study", {"n_trials": 2}, {})
    tracking.log_dict(run, {"a": 1}, "evidence.json")
    logged = _client(tracking).create_logged_model(
        experiment_id=tracking.ensure_reachable(), name="model", source_run_id=run
    )
    version = tracking.register(f"models:/{logged.model_id}", run)
    tracking.end_run(run)

    copy = tmp_path / "restored" / "e2i"
    shutil.copytree(original, copy)
    before = _tree(original)
    moved = tracking.model_copy(
        update={"tracking_uri": f"sqlite:///{copy / 'mlflow' / 'mlflow.db'}", "home": str(copy)}
    )
    moved.ensure_reachable()

    root = (copy / "mlflow" / "artifacts").as_uri()
    c = _client(moved)
    assert c.get_experiment_by_name(EXPERIMENT).artifact_location == root
    assert c.get_run(run).info.artifact_uri == f"{root}/{run}/artifacts"
    assert c.get_logged_model(logged.model_id).artifact_location.startswith(root + "/models/")
    registered = c.get_model_version(MODEL, version)
    assert registered.source.startswith(root + "/models/")
    # What the copy writes now lands in the copy; what came along is read there.
    later = moved.start_study_run("study-2", {}, {})
    moved.log_dict(later, {"b": 2}, "more.json")
    moved.log_dict(run, {"c": 3}, "late.json")
    artifacts = copy / "mlflow" / "artifacts"
    assert (artifacts / later / "artifacts" / "more.json").is_file()
    assert {p.name for p in (artifacts / run / "artifacts").iterdir()} == {
        "evidence.json",
        "late.json",
    }
    assert _tree(original) == before
    # The original's DB still names its own artifacts.
    assert (
        _client(tracking).get_experiment_by_name(EXPERIMENT).artifact_location
        == (original / "mlflow" / "artifacts").as_uri()
    )
    moved.ensure_reachable()  # once re-rooted, nothing more to do
    assert _tree(original) == before


def test_an_experiment_with_its_artifacts_elsewhere_is_refused_naming_both(tmp_path, template_db):
    home = tmp_path / "home"
    tracking = _home(home, template_db)
    elsewhere = tmp_path / "shared-artifacts"
    configured = tracking.model_copy(update={"artifact_root": str(elsewhere)})
    configured.ensure_reachable()
    assert _client(tracking).get_experiment_by_name(EXPERIMENT).artifact_location == (
        elsewhere.as_uri()
    )
    db = home / "mlflow" / "mlflow.db"
    before = db.read_bytes()
    # Configured differently now: not a home that moved, so nothing is rewritten.
    with pytest.raises(dg.Failure) as caught:
        tracking.start_study_run("study", {}, {})
    message = caught.value.description
    assert elsewhere.as_uri() in message
    assert (home / "mlflow" / "artifacts").as_uri() in message
    assert "E2I_MLFLOW_ARTIFACT_ROOT" in message and EXPERIMENT in message
    assert db.read_bytes() == before


def test_a_copied_db_outside_any_home_is_refused_not_rewritten(tmp_path, template_db):
    """A tracking DB outside the home may be shared with the original: never re-rooted."""
    first = _home(tmp_path / "first", template_db).model_copy(update={"home": None})
    first.ensure_reachable()
    copy = tmp_path / "second" / "mlflow.db"
    copy.parent.mkdir()
    shutil.copyfile(tmp_path / "first" / "mlflow" / "mlflow.db", copy)
    second = first.model_copy(update={"tracking_uri": f"sqlite:///{copy}"})
    with pytest.raises(dg.Failure, match="cannot move an experiment's artifact location"):
        second.ensure_reachable()


def test_the_artifact_root_follows_the_store_and_never_defaults_to_the_working_directory():
    home = "/srv/e2i"
    assert artifact_root_uri(Path("/srv/e2i/mlflow/mlflow.db"), None, home) == (
        "file:///srv/e2i/mlflow/artifacts"
    )
    # A database server: under the home, or where configured (a path or a URI).
    assert artifact_root_uri(None, None, home) == "file:///srv/e2i/mlflow/artifacts"
    assert artifact_root_uri(None, "/data/mlflow", home) == "file:///data/mlflow"
    assert artifact_root_uri(None, "s3://bucket/e2i", home) == "s3://bucket/e2i"
    assert artifact_root_uri(None, None, None) is None  # then the resource refuses
    server = MlflowResource(
        tracking_uri="postgresql+psycopg2://u@127.0.0.1:1/x",
        experiment=EXPERIMENT,
        registered_model=MODEL,
        home=home,
    )
    assert server.describe()["artifacts"] == "/srv/e2i/mlflow/artifacts"


def test_with_a_tracking_server_an_experiment_never_keeps_artifacts_at_a_path():
    """Through a server, artifacts are the server's (`mlflow-artifacts:/`) or remote; a
    path would be written on each client's own disk: refused, named, no credentials."""
    server = MlflowResource(
        tracking_uri="http://alice:s3cret@mlflow.internal:5000",
        experiment=EXPERIMENT,
        registered_model=MODEL,
        home="/srv/e2i",
    )
    assert server.artifact_uri is None  # the server chooses
    assert server.describe()["artifacts"] == "through the tracking server"
    server._check_artifact_location("mlflow-artifacts:/1")
    server._check_artifact_location("s3://bucket/e2i/1")
    for local in ("file:///srv/e2i/mlflow/artifacts/1", "/srv/mlruns/1"):
        with pytest.raises(dg.Failure, match="--serve-artifacts") as refused:
            server._check_artifact_location(local)
        assert local in refused.value.description
        assert "s3cret" not in refused.value.description
