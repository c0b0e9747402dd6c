"""Where a run's steps execute: child processes of its run worker, or Celery workers.

`platform.executor.kind` picks it (E2I_EXECUTOR). With `celery`, every step is a task
on the queue `platform.executor.celery_queue` of a Redis broker, and any worker that
listens there (`make worker`, on any machine) runs it; the run worker only plans,
submits and collects events. dagster-celery, not a hand-made queue: it hands each
step to `execute_plan` on the worker with the run's instance reference, so the step
writes its events into the instance's (PostgreSQL) storage like any other.

The broker URL can hold a password: the executor config names the environment
variable (`{"env": ...}`), so run config, the UI and the run's tags never carry it.
Every key the broker and the result backend create starts with `<queue>:`, so one
Redis serves several deployments (and test runs) that never see each other's tasks.
"""

from __future__ import annotations

import os

import dagster as dg

BROKER_VARIABLES = ("E2I_CELERY_BROKER", "REDIS_URL")
CELERY_TICK_SECONDS = 0.1

# What a process that runs steps imports once, before its first step: the code location
# and the libraries the steps use. A multiprocess run's fork server imports them, and
# each step is a fork of it that starts in about a second instead of a fresh
# interpreter importing the same modules again (5 s for a step that trains; see
# STACK_NOTES "Import cost"). `make worker` imports them before Celery forks its pool,
# so no step pays them either. None of them starts a thread or opens a connection on
# import, so a fork inherits no lock.
STEP_MODULES = (
    "e2i_platform.definitions",
    "pandas",
    "pyarrow.parquet",
    "pandera.pandas",
    "sklearn",
    "lightgbm",
    "optuna",
    "mlflow",
    "great_expectations",
    "feast",
)


class ExecutionConfigError(ValueError):
    """The configured executor cannot run here (names the setting and what is missing)."""


def broker_variable() -> str:
    """The environment variable that holds the broker URL: E2I_CELERY_BROKER, else
    REDIS_URL (the online store's Redis serves as broker too)."""
    for name in BROKER_VARIABLES:
        if os.environ.get(name):
            return name
    raise ExecutionConfigError(
        "platform.executor.kind is celery (E2I_EXECUTOR) but neither E2I_CELERY_BROKER nor "
        "REDIS_URL is set: Celery needs a Redis broker URL (redis://host:6379/0)"
    )


def celery_app_config(queue: str, redelivery_seconds: int = 3600) -> dict:
    """Celery settings shared by the executor (submitting) and `make worker` (consuming);
    they must agree, or tasks go where no worker listens."""
    prefix = {"global_keyprefix": f"{queue}:"}
    return {
        "task_default_queue": queue,
        # A worker takes one task at a time per process: a long step never holds a
        # second one back while other workers idle.
        "worker_prefetch_multiplier": 1,
        # Acknowledged when the step ends, not when it starts: the task of a worker that
        # dies mid-step is not lost (the run would wait for it forever) but goes back to
        # the queue after `redelivery_seconds`, and another worker runs the step again.
        # Its value is staged per run and published atomically, so the half-run attempt
        # leaves nothing a reader sees.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "broker_transport_options": {
            **prefix,
            "visibility_timeout": redelivery_seconds,
            # Sweep for tasks of dead workers often enough to honour a short timeout.
            "unacked_restore_interval": max(1, min(10, redelivery_seconds // 5)),
            "unacked_restore_throttle": 1,
            "max_retries": 3,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
        },
        "result_backend_transport_options": prefix,
        "broker_connection_retry_on_startup": True,
    }


def celery_executor_config(queue: str, redelivery_seconds: int = 3600) -> dict:
    variable = broker_variable()
    return {
        "broker": {"env": variable},
        "backend": {"env": variable},
        "config_source": celery_app_config(queue, redelivery_seconds),
    }


def executor_def(settings) -> dg.ExecutorDefinition:
    """The executor of the code location's jobs (and of the UI's ad-hoc asset runs)."""
    cfg = settings.platform.executor
    if cfg.kind == "celery":
        from dagster_celery import celery_executor, core_execution_loop

        # The run worker looks for finished steps once per tick (1 s in dagster-celery):
        # every step on the graph's critical path waited half a tick on average before
        # its successors were submitted. Results are read from Redis, so a short tick
        # costs a few cheap reads (bench/distributed.py measures both).
        core_execution_loop.TICK_SECONDS = CELERY_TICK_SECONDS
        return celery_executor.configured(
            celery_executor_config(cfg.celery_queue, cfg.celery_redelivery_seconds)
        )
    return dg.multiprocess_executor.configured(multiprocess_config(cfg.max_concurrent))


def multiprocess_config(max_concurrent: int) -> dict:
    """The multiprocess executor's config: at most `max_concurrent` step processes, each
    forked from a fork server that imported `STEP_MODULES` once per run.

    The fork server is started by the run's process at its first step and keeps that
    process's environment and working directory: a run worker (`dagster api
    execute_run`) is one process per run, so that is the run's own. A process that runs
    several runs with different environments (a test session) starts its runs with
    `spawn` instead."""
    return {
        "max_concurrent": max_concurrent,
        "start_method": {"forkserver": {"preload_modules": list(STEP_MODULES)}},
    }


def preload_step_modules() -> float:
    """Import `STEP_MODULES` in this process (a Celery worker, before its pool forks);
    the seconds it took."""
    import importlib
    import time

    started = time.perf_counter()
    for name in STEP_MODULES:
        importlib.import_module(name)
    return time.perf_counter() - started
