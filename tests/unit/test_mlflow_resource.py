"""MlflowResource against real MLflow: a SQLite tracking DB per test, copied from a template."""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path

import dagster as dg
import pytest

from e2i_platform.lib.urls import redact_uri
from e2i_platform.resources.mlflow import MlflowResource
from e2i_platform.resources.mlflow_store import sqlite_path
from e2i_platform.resources.mlflow_tracking import (
    MAX_ENTITIES_PER_BATCH,
    MAX_METRICS_PER_BATCH,
    MAX_PARAMS_TAGS_PER_BATCH,
    SKIPPED_METRICS_TAG,
    _batches,
)

# MLflow's own SQLAlchemy mapper setup, not ours.
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")

EXPERIMENT = "e2i_test"
MODEL = "e2i_test_model"


@pytest.fixture
def tracking(tracking_db: str) -> MlflowResource:
    return MlflowResource(tracking_uri=tracking_db, experiment=EXPERIMENT, registered_model=MODEL)


def client(resource: MlflowResource):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=resource.tracking_uri, registry_uri=resource.tracking_uri)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_trials_are_nested_runs_with_params_history_and_status(tracking: MlflowResource):
    parent = tracking.start_study_run("study-1", {"n_trials": 3, "sampler": "tpe"}, {"kind": "hp"})
    curve = [(step, 0.5 + step / 1000) for step in range(300)]
    done = tracking.log_trial(
        parent, 0, {"learning_rate": 0.05, "num_leaves": 31}, curve, {"best_auc": 0.79}, "COMPLETE"
    )
    pruned = tracking.log_trial(
        parent, 1, {"learning_rate": 0.3, "num_leaves": 7}, curve[:20], {}, "PRUNED"
    )
    failed = tracking.log_trial(parent, 2, {"learning_rate": 0.1}, [], {}, "FAIL")

    c = client(tracking)
    study = c.get_run(parent)
    assert study.info.status == "RUNNING"
    assert study.info.run_name == "study-1"
    assert study.data.params == {"n_trials": "3", "sampler": "tpe"}
    assert study.data.tags["kind"] == "hp"

    children = c.search_runs([study.info.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    assert {r.info.run_id for r in children} == {done, pruned, failed}

    run = c.get_run(done)
    assert run.info.run_name == "trial-0"
    assert run.info.status == "FINISHED"
    assert run.data.tags["optuna.state"] == "COMPLETE"
    assert run.data.params == {"learning_rate": "0.05", "num_leaves": "31"}
    assert run.data.metrics["best_auc"] == 0.79
    history = sorted(c.get_metric_history(done, "valid_auc"), key=lambda m: m.step)
    assert [(m.step, m.value) for m in history] == curve

    assert c.get_run(pruned).info.status == "FINISHED"  # stopped by design, not a fault
    assert c.get_run(pruned).data.tags["optuna.state"] == "PRUNED"
    assert len(c.get_metric_history(pruned, "valid_auc")) == 20
    assert c.get_run(failed).info.status == "FAILED"

    tracking.end_run(parent)
    assert c.get_run(parent).info.status == "FINISHED"


def test_non_finite_metrics_are_skipped_and_tagged(tracking: MlflowResource):
    parent = tracking.start_study_run("study", {}, {})
    curve = [(0, 0.6), (1, math.nan), (2, 0.7)]
    run_id = tracking.log_trial(
        parent, 4, {"x": 1}, curve, {"best_auc": 0.7, "logloss": math.inf}, "COMPLETE"
    )
    c = client(tracking)
    run = c.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert [m.step for m in c.get_metric_history(run_id, "valid_auc")] == [0, 2]
    assert "logloss" not in run.data.metrics
    assert set(run.data.tags[SKIPPED_METRICS_TAG].split(",")) == {"valid_auc@1", "logloss@2"}

    tracking.log_metrics(parent, {"test_auc": 0.81, "test_brier": math.nan})
    study = c.get_run(parent)
    assert study.data.metrics == {"test_auc": 0.81}
    assert study.data.tags[SKIPPED_METRICS_TAG] == "test_brier@0"


def test_large_trials_are_chunked_to_mlflow_batch_limits(tracking: MlflowResource):
    parent = tracking.start_study_run("study", {f"p{i}": i for i in range(150)}, {})
    curve = [(step, 0.5) for step in range(2500)]
    params = {f"param_{i}": i for i in range(250)}
    run_id = tracking.log_trial(parent, 0, params, curve, {"best_auc": 0.5}, "COMPLETE")
    c = client(tracking)
    assert len(c.get_run(parent).data.params) == 150
    assert len(c.get_run(run_id).data.params) == 250
    assert len(c.get_metric_history(run_id, "valid_auc")) == 2500
    tracking.set_tags(parent, {f"t{i}": "v" for i in range(120)})
    assert sum(k.startswith("t") for k in c.get_run(parent).data.tags) == 120


def test_batches_respect_mlflow_limits():
    # The SQLite store accepts oversized batches; a tracking server rejects them.
    metrics, params, tags = list(range(2500)), list(range(250)), list(range(120))
    batches = list(_batches(metrics, params, tags))
    for m, p, t in batches:
        assert len(m) <= MAX_METRICS_PER_BATCH
        assert len(p) <= MAX_PARAMS_TAGS_PER_BATCH and len(t) <= MAX_PARAMS_TAGS_PER_BATCH
        assert len(m) + len(p) + len(t) <= MAX_ENTITIES_PER_BATCH
    assert [x for m, _, _ in batches for x in m] == metrics
    assert [x for _, p, _ in batches for x in p] == params
    assert [x for _, _, t in batches for x in t] == tags
    assert len(batches) == 3  # 1000 + 1000 + 990 entities
    # the module repeats MLflow's limits so as not to import it
    from mlflow.utils import validation

    assert MAX_METRICS_PER_BATCH == validation.MAX_METRICS_PER_BATCH
    assert MAX_PARAMS_TAGS_PER_BATCH == validation.MAX_PARAMS_TAGS_PER_BATCH
    assert MAX_ENTITIES_PER_BATCH == validation.MAX_ENTITIES_PER_BATCH


def test_disabled_resource_creates_nothing_and_returns_none(tmp_path: Path):
    db = tmp_path / "mlflow" / "mlflow.db"
    off = MlflowResource(
        enabled=False, tracking_uri=f"sqlite:///{db}", experiment=EXPERIMENT, registered_model=MODEL
    )
    assert off.describe() == {"tracking": "off"}
    assert off.ensure_reachable() is None
    parent = off.start_study_run("study", {"a": 1}, {"b": "c"})
    assert parent is None
    assert off.log_trial(parent, 0, {"a": 1}, [(0, 0.5)], {"auc": 0.5}, "COMPLETE") is None
    assert off.log_metrics(parent, {"auc": 0.5}) is None
    assert off.set_tags(parent, {"a": "b"}) is None
    assert off.log_dict(parent, {"a": 1}, "x.json") is None
    assert off.end_run(parent) is None
    assert off.log_model(parent, object(), None, []) is None
    assert off.register("models:/m-1", parent) is None
    assert off.alias_version("champion") is None
    assert off.set_alias("champion", "1") is None
    assert off.start_run("train", {"a": 1}, {}) is None
    assert off.log_dataset("abc", object(), "training_dataset", "0" * 16) is None
    assert off.register_candidate("models:/m-1", parent, {}) is None
    assert off.keep_candidate({"model_version": "1"})["action"] == "none: tracking off"
    assert off.set_version_tags("1", {"a": "b"}) is None
    assert off.version_tags("1") is None
    assert off.own_version({"model_version": "1"}) is None
    assert off.aliases() == {}
    assert off.run_link("abc") == ""
    assert list(tmp_path.iterdir()) == []


def test_module_does_not_import_mlflow():
    code = (
        "import sys, e2i_platform.resources.mlflow as m; "
        "m.MlflowResource(enabled=False, tracking_uri='sqlite:///x.db', experiment='e', "
        "registered_model='r').describe(); "
        "assert 'mlflow.tracking' not in sys.modules, 'mlflow imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_first_connection_creates_db_directory_and_experiment(tmp_path: Path):
    db = tmp_path / "home" / "mlflow" / "mlflow.db"
    resource = MlflowResource(
        tracking_uri=f"sqlite:///{db}", experiment=EXPERIMENT, registered_model=MODEL
    )
    experiment_id = resource.ensure_reachable()
    assert db.is_file()
    assert resource.ensure_reachable() == experiment_id
    experiment = client(resource).get_experiment(experiment_id)
    assert experiment.name == EXPERIMENT
    assert experiment.artifact_location == (db.parent / "artifacts").as_uri()
    assert resource.describe() == {
        "tracking": "on",
        "tracking_uri": f"sqlite:///{db}",
        "experiment": EXPERIMENT,
        "registered_model": MODEL,
        "artifacts": str(db.parent / "artifacts"),
    }


def test_unreachable_server_fails_fast_without_leaking_the_password(monkeypatch):
    # The first HTTP request loads MLflow's request-header plugins once per process (the
    # installed feast registers one, and importing feast takes seconds): load them here so
    # the timing below measures retries and timeouts only.
    import mlflow.tracking.request_header.registry  # noqa: F401

    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_TIMEOUT", raising=False)
    port = free_port()
    resource = MlflowResource(
        tracking_uri=f"http://alice:hunter2secret@127.0.0.1:{port}",
        experiment=EXPERIMENT,
        registered_model=MODEL,
    )
    safe = f"http://127.0.0.1:{port}"
    assert resource.describe()["tracking_uri"] == safe
    assert "hunter2secret" not in str(resource.describe())

    started = time.monotonic()
    with pytest.raises(dg.Failure) as failure:
        resource.ensure_reachable()
    assert time.monotonic() - started < 10
    message = str(failure.value)
    assert safe in message
    assert "MlflowException" in message
    assert "hunter2secret" not in message
    assert "alice" not in message
    assert "hunter2secret" not in "".join(traceback.format_exception(failure.value))
    # the fail-fast settings were scoped to the call
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ
    assert "MLFLOW_HTTP_REQUEST_TIMEOUT" not in os.environ

    # Other calls keep MLflow's retries (none here, to be quick); MLflow's errors quote the
    # full URL, so they come back as a dg.Failure without the password.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(dg.Failure) as failure:
        resource.start_study_run("study", {}, {})
    text = "".join(traceback.format_exception(failure.value))
    assert safe in text
    assert "hunter2secret" not in text


def test_uri_helpers():
    assert redact_uri("https://u:p%40ss@mlflow.example:8443/prefix?token=x") == (
        "https://mlflow.example:8443/prefix"
    )
    assert redact_uri("sqlite:////abs/mlflow.db") == "sqlite:////abs/mlflow.db"
    assert sqlite_path("sqlite:////abs/dir/mlflow.db") == Path("/abs/dir/mlflow.db")
    assert sqlite_path("sqlite:///rel.db") == Path("rel.db")
    assert sqlite_path("http://host:5000") is None
    http = MlflowResource(
        tracking_uri="http://u:pw@host:5000/", experiment=EXPERIMENT, registered_model=MODEL
    )
    assert "pw" not in str(http.describe())


def test_log_model_register_and_aliases_round_trip(tracking: MlflowResource, monkeypatch):
    import lightgbm as lgb
    import mlflow
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(200, 3)), columns=["age", "dose", "visits"])
    label = (frame["dose"] + rng.normal(scale=0.5, size=200) > 0).astype(int)
    booster = lgb.train(
        {"objective": "binary", "verbose": -1, "num_leaves": 4}, lgb.Dataset(frame, label), 5
    )

    # Nothing may fall back to MLflow's default store (./mlflow.db in the working directory).
    tracking_dir = Path(tracking.tracking_uri.removeprefix("sqlite:///")).parent
    cwd = tracking_dir.parent / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)

    parent = tracking.start_study_run("train", {"seed": 0}, {})
    global_uri = mlflow.get_tracking_uri()
    env_uri = os.environ.get("MLFLOW_TRACKING_URI")
    model_uri = tracking.log_model(parent, booster, frame.head(5), ["lightgbm==4.7.0"])
    assert mlflow.get_tracking_uri() == global_uri
    assert os.environ.get("MLFLOW_TRACKING_URI") == env_uri
    assert model_uri.startswith("models:/")

    c = client(tracking)
    assert c.get_run(parent).info.status == "RUNNING"  # log_model does not end the run
    assert list((tracking_dir / "artifacts").rglob("MLmodel"))

    assert tracking.alias_version("champion") is None  # no registered model yet
    version = tracking.register(model_uri, parent)
    assert version == "1"
    assert c.get_model_version(MODEL, version).run_id == parent
    assert tracking.alias_version("champion") is None  # model, but no alias
    tracking.set_alias("champion", version)
    assert tracking.alias_version("champion") == "1"

    second = tracking.register(tracking.log_model(parent, booster, frame.head(5), []), parent)
    assert second == "2"
    tracking.set_alias("champion", second)
    assert tracking.alias_version("champion") == "2"
    tracking.set_alias("champion", version)
    assert tracking.alias_version("champion") == "1"

    tracking.log_dict(parent, {"threshold": 0.5}, "decision.json")
    artifact_uri = c.get_run(parent).info.artifact_uri
    assert mlflow.artifacts.load_dict(f"{artifact_uri}/decision.json") == {"threshold": 0.5}
    experiment_id = c.get_run(parent).info.experiment_id
    assert tracking.run_link(parent) == f"runs:/{parent} (experiment {experiment_id})"

    assert list(cwd.iterdir()) == []

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking.tracking_uri)
    info = mlflow.models.get_model_info(f"models:/{MODEL}/1")
    assert info.signature is not None
    assert info.signature.inputs.input_names() == ["age", "dose", "visits"]


def test_trial_log_logs_every_trial_in_the_background_and_surfaces_failures(
    tracking: MlflowResource,
):
    import optuna

    from e2i_platform.training.hpo import TrialLog

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    parent = tracking.start_study_run("study-bg", {}, {})
    study = optuna.create_study(direction="maximize")
    log = TrialLog(tracking, parent)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=5, callbacks=[log.callback])
    log.close()
    c = client(tracking)
    children = c.search_runs(
        [c.get_run(parent).info.experiment_id], f"tags.mlflow.parentRunId = '{parent}'"
    )
    assert log.runs == 5 and len(children) == 5
    assert sorted(r.data.params["x"] for r in children) == sorted(
        str(t.params["x"]) for t in study.trials
    )

    # A parent run that does not exist: each log fails in the worker; close() says so.
    broken = TrialLog(tracking, "0" * 32)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2, callbacks=[broken.callback])
    with pytest.raises(
        RuntimeError, match=r"MLflow logging failed for 2 trial\(s\), first trial 5"
    ):
        broken.close()


def test_optuna_storage_urls_are_shown_without_password():
    assert redact_uri("postgresql+psycopg2://opt:s3cret@db:5432/optuna?sslmode=require") == (
        "postgresql+psycopg2://db:5432/optuna"
    )
