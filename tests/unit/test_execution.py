"""The executor the code location configures: multiprocess by default, dagster-celery
with E2I_EXECUTOR=celery, its broker named by environment variable (never its value)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from e2i_platform.ops.execution import (
    STEP_MODULES,
    ExecutionConfigError,
    celery_app_config,
    executor_def,
)
from e2i_platform.ops.jobs import MAIN_JOB
from e2i_platform.settings import load_settings

from support import definitions

SECRET_BROKER = "redis://:s3cret-broker@127.0.0.1:6379/0"


def test_multiprocess_is_the_default_with_its_cap_and_a_preloaded_fork_server(
    e2i_home, monkeypatch
):
    monkeypatch.setenv("E2I_MAX_CONCURRENT", "3")
    settings = load_settings()
    assert settings.platform.executor.kind == "multiprocess"
    executor = executor_def(settings)
    assert executor.name == "multiprocess"
    expected = {"forkserver": {"preload_modules": list(STEP_MODULES)}}
    # The UI's ad-hoc asset runs (the code location's executor) ...
    config = executor.apply_config_mapping({}).value["config"]
    assert config["max_concurrent"] == 3 and config["start_method"] == expected
    # ... and the main job's default run config, which the Launchpad shows.
    job = definitions(settings).resolve_job_def(MAIN_JOB)
    multiprocess = job.run_config["execution"]["config"]["multiprocess"]
    assert multiprocess == {"max_concurrent": 3, "start_method": expected}


def test_the_step_modules_import_without_starting_a_thread():
    """A fork copies one thread: a module whose import started another (a pool, a
    telemetry sender) would leave its locks held in every step forked from the server."""
    code = (
        "import threading\n"
        "from e2i_platform.ops.execution import STEP_MODULES, preload_step_modules\n"
        "preload_step_modules()\n"
        "import sys\n"
        "missing = [m for m in STEP_MODULES if m not in sys.modules]\n"
        "print(missing, [t.name for t in threading.enumerate()])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    assert done.stdout.strip().splitlines()[-1] == "[] ['MainThread']", done.stdout


SHARED_STORES = {
    "E2I_STORE_URL": "s3://bucket/prefix",
    "OPTUNA_STORAGE_URL": "postgresql+psycopg2://optuna@db.internal:5432/optuna",
    "MLFLOW_TRACKING_URI": "http://mlflow.internal:5000",
    "E2I_FEAST_REGISTRY": "sql",
    "E2I_FEAST_REGISTRY_URL": "postgresql+psycopg2://feast@db.internal:5432/feast",
    "E2I_ONLINE_STORE": "redis",
}


def shared_stores(monkeypatch) -> None:
    for key, value in SHARED_STORES.items():
        monkeypatch.setenv(key, value)


def test_celery_reads_the_broker_from_the_environment_and_never_stores_it(e2i_home, monkeypatch):
    shared_stores(monkeypatch)
    monkeypatch.setenv("E2I_EXECUTOR", "celery")
    monkeypatch.setenv("E2I_CELERY_QUEUE", "e2i-unit")
    monkeypatch.setenv("REDIS_URL", SECRET_BROKER)
    settings = load_settings()
    defs = definitions(settings)
    job = defs.resolve_job_def(MAIN_JOB)
    assert job.executor_def.name == "celery"
    # The run worker looks for finished steps ten times a second, not once (dagster-celery).
    from dagster_celery import core_execution_loop

    from e2i_platform.ops.execution import CELERY_TICK_SECONDS

    assert core_execution_loop.TICK_SECONDS == CELERY_TICK_SECONDS == 0.1
    from dagster._serdes import serialize_value

    # What the instance stores of the job (and the UI shows) names the variable only.
    assert "s3cret" not in serialize_value(job.get_job_snapshot())
    from e2i_platform.ops.execution import celery_executor_config

    config = celery_executor_config("e2i-unit")
    assert config["broker"] == {"env": "REDIS_URL"} and config["backend"] == {"env": "REDIS_URL"}
    # E2I_CELERY_BROKER wins over REDIS_URL when both are set.
    monkeypatch.setenv("E2I_CELERY_BROKER", "redis://127.0.0.1:6379/3")
    assert celery_executor_config("q")["broker"] == {"env": "E2I_CELERY_BROKER"}


def test_every_celery_key_and_the_queue_carry_the_queue_prefix():
    config = celery_app_config("e2i-blue")
    assert config["task_default_queue"] == "e2i-blue"
    assert config["broker_transport_options"]["global_keyprefix"] == "e2i-blue:"
    assert config["result_backend_transport_options"]["global_keyprefix"] == "e2i-blue:"
    assert config["worker_prefetch_multiplier"] == 1


def test_celery_without_a_broker_is_an_error_naming_both_variables(e2i_home, monkeypatch):
    shared_stores(monkeypatch)
    monkeypatch.setenv("E2I_EXECUTOR", "celery")
    monkeypatch.delenv("REDIS_URL", raising=False)
    settings = load_settings()
    with pytest.raises(ExecutionConfigError, match="E2I_CELERY_BROKER nor REDIS_URL"):
        definitions(settings)


def test_make_worker_refuses_a_multiprocess_configuration(e2i_home, capsys):
    from e2i_platform.ops.worker import main

    assert main([]) == 2
    assert "E2I_EXECUTOR=celery" in capsys.readouterr().err


def test_celery_refuses_every_store_that_would_be_a_workers_own_file(e2i_home, monkeypatch):
    from e2i_platform.settings.loader import ConfigError

    monkeypatch.setenv("E2I_EXECUTOR", "celery")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("E2I_ONLINE_STORE", "sqlite")
    settings = load_settings()
    problems = "\n".join(settings.machine_local_state())
    for named in (
        "E2I_STORE_URL",
        "OPTUNA_STORAGE_URL",
        "MLFLOW_TRACKING_URI",
        "E2I_FEAST_REGISTRY=sql",
        "online store is SQLite",
    ):
        assert named in problems
    with pytest.raises(ConfigError, match="steps on several machines need stores"):
        definitions(settings)
    # Every store shared: nothing to refuse; multiprocess never asks.
    shared_stores(monkeypatch)
    assert load_settings().machine_local_state() == []
    monkeypatch.setenv("E2I_EXECUTOR", "multiprocess")
    monkeypatch.delenv("E2I_STORE_URL")
    assert load_settings().machine_local_state() == []
