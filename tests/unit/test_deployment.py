"""The launcher and the Celery workers agree on their deployment: a fingerprint per part
(lib.deployment), recorded by the launching side in the instance, compared by `make
worker` at start and by every step on a worker (ConfigResource.setup_for_execution)."""

from __future__ import annotations

import json

import dagster as dg
import pytest

from e2i_platform.lib.deployment import (
    CODE_AND_CONFIGURATION,
    PARTS,
    deployment_fingerprint,
    read_reference,
    record_reference,
    reference_key,
)
from e2i_platform.ops.instance import open_instance, prepare_instance
from e2i_platform.resources import ConfigResource
from e2i_platform.settings import load_settings

from support import edit_yaml

QUEUE = "e2i-deploy-unit"
PASSWORD = "s3cret-pw"
CELERY = {
    "E2I_EXECUTOR": "celery",
    "E2I_CELERY_QUEUE": QUEUE,
    "REDIS_URL": f"redis://:{PASSWORD}@127.0.0.1:6379/0",
    "E2I_STORE_URL": "s3://bucket/prefix",
    "OPTUNA_STORAGE_URL": f"postgresql+psycopg2://optuna:{PASSWORD}@db.internal:5432/optuna",
    "MLFLOW_TRACKING_URI": "http://mlflow.internal:5000",
    "E2I_FEAST_REGISTRY": "sql",
    "E2I_FEAST_REGISTRY_URL": f"postgresql+psycopg2://feast:{PASSWORD}@db.internal:5432/feast",
    "E2I_ONLINE_STORE": "redis",
    "E2I_LOCK_DB_URL": f"postgresql://locks:{PASSWORD}@db.internal:5432/locks",
}


@pytest.fixture
def celery(e2i_home, monkeypatch) -> None:
    """The environment of a machine of a Celery deployment with shared stores."""
    monkeypatch.delenv("DAGSTER_PG_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    for key, value in CELERY.items():
        monkeypatch.setenv(key, value)


def differing(before: dict[str, str], after: dict[str, str]) -> set[str]:
    return {part for part in before if before[part] != after[part]}


def test_equal_settings_give_equal_fingerprints_of_every_part(celery):
    first = deployment_fingerprint(load_settings())
    assert list(first) == list(PARTS)
    assert all(len(value) == 16 and int(value, 16) >= 0 for value in first.values())
    assert deployment_fingerprint(load_settings()) == first


def test_a_threshold_edit_changes_code_and_configuration_only(celery, config_copy):
    before = deployment_fingerprint(load_settings())
    edit_yaml(config_copy, "promotion", ("quality_gate", "min_roc_auc"), 0.71)
    assert differing(before, deployment_fingerprint(load_settings())) == {CODE_AND_CONFIGURATION}


def test_another_store_changes_the_store_only(celery, monkeypatch):
    monkeypatch.setenv("E2I_STORE_URL", "s3://a/x")
    before = deployment_fingerprint(load_settings())
    monkeypatch.setenv("E2I_STORE_URL", "s3://b/x")
    assert differing(before, deployment_fingerprint(load_settings())) == {"store"}
    # The same bucket name on another server is another store.
    moved = deployment_fingerprint(load_settings())
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://minio-2.internal:9000")
    assert differing(moved, deployment_fingerprint(load_settings())) == {"store"}


def test_another_environment_is_named(celery, monkeypatch):
    before = deployment_fingerprint(load_settings())
    monkeypatch.setenv("E2I_ENV", "prod")
    monkeypatch.setenv("DAGSTER_PG_URL", "postgresql+psycopg2://dagster@db.internal:5432/dagster")
    after = deployment_fingerprint(load_settings())
    # prod stores the instance in PostgreSQL and takes its table sources from landing.
    assert {"environment", CODE_AND_CONFIGURATION} <= differing(before, after)


def test_a_password_is_no_part_of_it_but_the_server_is(celery, monkeypatch):
    monkeypatch.setenv("DAGSTER_PG_URL", f"postgresql+psycopg2://d:{PASSWORD}@db.internal/d")
    before = deployment_fingerprint(load_settings())
    for key in ("REDIS_URL", "OPTUNA_STORAGE_URL", "E2I_FEAST_REGISTRY_URL", "E2I_LOCK_DB_URL"):
        monkeypatch.setenv(key, CELERY[key].replace(PASSWORD, "another-password"))
    assert deployment_fingerprint(load_settings()) == before
    # The lock database named as SQLAlchemy does (with its driver) is the same database.
    monkeypatch.setenv("E2I_LOCK_DB_URL", CELERY["E2I_LOCK_DB_URL"].replace("ql:", "ql+psycopg2:"))
    assert deployment_fingerprint(load_settings()) == before

    monkeypatch.setenv("OPTUNA_STORAGE_URL", CELERY["OPTUNA_STORAGE_URL"].replace("db.", "db2."))
    assert differing(before, deployment_fingerprint(load_settings())) == {"Optuna storage"}
    monkeypatch.setenv("E2I_LOCK_DB_URL", "")  # falls back to DAGSTER_PG_URL: another database
    assert "lock database" in differing(before, deployment_fingerprint(load_settings()))


def test_the_reference_round_trips_through_an_instance_and_holds_no_url(celery, instance):
    settings = load_settings()
    recorded = record_reference(instance, settings)
    reference = read_reference(instance, QUEUE)
    assert reference == recorded
    assert reference.parts == deployment_fingerprint(settings)
    assert reference.host and reference.recorded_at
    assert read_reference(instance, "another-queue") is None
    stored = instance.run_storage.get_cursor_values({reference_key(QUEUE)})[reference_key(QUEUE)]
    assert set(json.loads(stored)) == {"parts", "recorded_at", "host"}
    for value in ("internal", PASSWORD, "s3://", "redis://"):
        assert value not in stored


def test_prepare_instance_records_the_reference_with_celery_only(celery, monkeypatch):
    settings = load_settings()
    home = prepare_instance(settings)
    with open_instance(home) as instance:
        reference = read_reference(instance, QUEUE)
    assert reference is not None and reference.parts == deployment_fingerprint(settings)

    monkeypatch.setenv("E2I_EXECUTOR", "multiprocess")
    monkeypatch.setenv("E2I_CELERY_QUEUE", "e2i-deploy-local")
    home = prepare_instance(load_settings())
    with open_instance(home) as instance:
        assert read_reference(instance, "e2i-deploy-local") is None


def config_resource() -> ConfigResource:
    settings = load_settings()
    return ConfigResource(config_dir=str(settings.config_dir), env=settings.env)


def step_starts(instance) -> None:
    """A step that requires the configuration resource, in a real run on `instance`;
    raises `dg.Failure` with the resource's refusal when its resources fail to start."""

    @dg.asset
    def probe(e2i_config: ConfigResource) -> int:
        return 1

    result = dg.materialize(
        [probe],
        resources={"e2i_config": config_resource()},
        instance=instance,
        raise_on_error=False,
    )
    if not result.success:
        (failure,) = [
            e
            for e in result.all_events
            if e.event_type == dg.DagsterEventType.RESOURCE_INIT_FAILURE
        ]
        raise dg.Failure(description=str(failure.event_specific_data.error))


def test_a_step_fails_when_the_reference_was_recorded_under_another_threshold(
    celery, config_copy, instance
):
    record_reference(instance, load_settings())
    step_starts(instance)  # the same configuration: passes

    edit_yaml(config_copy, "promotion", ("quality_gate", "min_roc_auc"), 0.71)
    with pytest.raises(dg.Failure) as failure:
        step_starts(instance)
    message = failure.value.description
    assert f"{CODE_AND_CONFIGURATION} differs" in message
    assert "make run or make dev" in message
    for other in PARTS[1:]:
        assert other not in message.split(" from the reference")[0]
    assert "0.71" not in message and "0.65" not in message


def test_a_step_of_a_local_multiprocess_run_is_never_refused(
    celery, config_copy, instance, monkeypatch
):
    record_reference(instance, load_settings())
    edit_yaml(config_copy, "promotion", ("quality_gate", "min_roc_auc"), 0.71)
    with pytest.raises(dg.Failure):
        step_starts(instance)
    monkeypatch.setenv("E2I_EXECUTOR", "multiprocess")
    step_starts(instance)


def test_a_sensor_evaluation_is_never_refused(celery, config_copy, instance):
    """The freshness sensor requires the resource; it runs where runs are launched, and a
    refused tick would silence its paging."""
    record_reference(instance, load_settings())
    edit_yaml(config_copy, "promotion", ("quality_gate", "min_roc_auc"), 0.71)
    with dg.build_init_resource_context(instance=instance) as context:
        assert context.run is None  # no run: a sensor's or schedule's resources
        config_resource().setup_for_execution(context)


def test_a_step_without_a_reference_proceeds(celery, instance):
    step_starts(instance)


def test_the_refused_step_never_runs_its_body(celery, config_copy, instance, tmp_path):
    ran = tmp_path / "ran"

    @dg.asset
    def needs_config(e2i_config: ConfigResource) -> None:
        ran.write_text("ran")

    record_reference(instance, load_settings())
    edit_yaml(config_copy, "quality", ("future_tolerance_minutes",), 7)
    result = dg.materialize(
        [needs_config],
        resources={"e2i_config": config_resource()},
        instance=instance,
        raise_on_error=False,
    )
    assert not result.success and not ran.exists()
    # The step's resources failed to start: the step fails before its IO manager or body.
    (failure,) = [
        e
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.RESOURCE_INIT_FAILURE
        and e.step_key == "needs_config"
    ]
    assert CODE_AND_CONFIGURATION in str(failure.event_specific_data.error)


def test_make_worker_refuses_to_start_naming_every_differing_part(
    celery, config_copy, monkeypatch, capsys
):
    from e2i_platform.ops.worker import main

    prepare_instance(load_settings())  # the launcher records its reference
    # A broker no transport serves: a worker that got past the check fails, never blocks.
    monkeypatch.setenv("E2I_CELERY_BROKER", "e2i-no-such-transport://nowhere")
    edit_yaml(config_copy, "quality", ("future_tolerance_minutes",), 7)
    monkeypatch.setenv("E2I_STORE_URL", "s3://another-bucket/prefix")
    assert main([]) == 2  # returned before Celery: the test would block in worker_main
    err = capsys.readouterr().err
    assert f"{CODE_AND_CONFIGURATION}, store differ" in err
    assert "launcher's configuration" in err and "make run or make dev" in err
    for value in ("another-bucket", PASSWORD, "internal"):
        assert value not in err


def test_make_worker_without_a_reference_starts_saying_it_could_not_compare(
    celery, e2i_home, capsys
):
    from e2i_platform.ops.worker import compare_with_reference

    assert compare_with_reference(load_settings()) is True
    assert "could not compare" in capsys.readouterr().err
    assert list(e2i_home.iterdir()) == []  # a worker keeps nothing on its disk

    with open_instance(prepare_instance(load_settings())) as instance:
        instance.run_storage.set_cursor_values({reference_key(QUEUE): ""})  # none recorded
    assert compare_with_reference(load_settings()) is True
    assert f"no reference for queue {QUEUE!r}" in capsys.readouterr().err
