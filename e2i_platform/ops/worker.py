"""`make worker`: a Celery worker that runs the platform's steps (E2I_EXECUTOR=celery).

It consumes the queue the executor submits to (`platform.executor.celery_queue`), from
the broker the executor uses (E2I_CELERY_BROKER, else REDIS_URL), with the same Celery
settings (`ops.execution.celery_app_config`): both sides read them from one place, so
they cannot drift apart. Each task is one step of a run; the worker rebuilds the code
location from its module (as the run worker does) and writes the step's events to the
run's instance, so start it with the same configuration (E2I_ENV and the stores'
variables) as the machine that launches runs. It refuses to start when its deployment
fingerprint differs from the reference that machine recorded in the instance
(lib.deployment; every step checks it again).

    make worker                       # name e2i-<pid>@<host>, concurrency max_concurrent
    make worker ARGS="--name w1 --concurrency 1"
"""

from __future__ import annotations

import argparse
import os
import socket
import sys


def celery_app(queue: str, redelivery_seconds: int):
    """The Celery app of dagster-celery with the platform's broker and settings, its
    step task registered."""
    from dagster_celery.executor import CeleryExecutor
    from dagster_celery.make_app import make_app
    from dagster_celery.tasks import create_task

    from e2i_platform.ops.execution import broker_variable, celery_app_config

    url = os.environ[broker_variable()]
    executor = CeleryExecutor.for_cli(
        broker=url,
        backend=url,
        include=[],
        config_source=celery_app_config(queue, redelivery_seconds),
    )
    app = make_app(executor.app_args())
    create_task(app)
    return app


def compare_with_reference(settings) -> bool:
    """Whether this worker may start: False (and why, on stderr) when the instance holds
    a reference for its queue and this machine's fingerprint differs from it, or when
    the instance cannot be configured here (PostgreSQL storage without DAGSTER_PG_URL).
    No reference, or a database that does not answer: it starts, saying it could not
    compare (every step compares again). Nothing is written to this machine's disk."""
    from e2i_platform.lib.deployment import deployment_fingerprint, mismatch_message, read_reference
    from e2i_platform.ops.instance import open_launchers_instance

    queue = settings.platform.executor.celery_queue
    try:
        with open_launchers_instance(settings) as instance:
            if instance is None:
                print(
                    "make worker: could not compare with the launcher's configuration: no "
                    "Dagster instance in this machine's E2I_HOME (SQLite storage)",
                    file=sys.stderr,
                )
                return True
            reference = read_reference(instance, queue)
    except RuntimeError as error:  # e.g. PostgreSQL storage without DAGSTER_PG_URL
        print(f"make worker: {error}", file=sys.stderr)
        return False
    except Exception as error:  # the instance's database unreachable: steps will say so
        print(
            f"make worker: could not compare with the launcher's configuration: the Dagster "
            f"instance could not be read ({type(error).__name__})",
            file=sys.stderr,
        )
        return True
    if reference is None:
        print(
            f"make worker: could not compare with the launcher's configuration: the instance "
            f"holds no reference for queue {queue!r} yet (make run or make dev records it)",
            file=sys.stderr,
        )
        return True
    if differing := reference.differing(deployment_fingerprint(settings)):
        print(
            f"make worker: {mismatch_message(differing, reference, 'This worker')}", file=sys.stderr
        )
        return False
    print(
        f"make worker: configuration matches the reference recorded by {reference.host} "
        f"at {reference.recorded_at}",
        flush=True,
    )
    return True


def main(argv: list[str] | None = None) -> int:
    from e2i_platform.ops.execution import ExecutionConfigError, preload_step_modules
    from e2i_platform.settings import load_settings
    from e2i_platform.settings.loader import ConfigError

    parser = argparse.ArgumentParser(prog="make worker", description=__doc__.split("\n")[0])
    parser.add_argument("--name", help="worker name (default e2i-<pid>); @<host> is appended")
    parser.add_argument(
        "--concurrency", type=int, help="steps at once (default platform.executor.max_concurrent)"
    )
    parser.add_argument("--loglevel", default="INFO")
    args = parser.parse_args(argv)

    settings = load_settings()
    cfg = settings.platform.executor
    if cfg.kind != "celery":
        print(
            "make worker: platform.executor.kind is multiprocess; set E2I_EXECUTOR=celery here "
            "and where runs are launched, or no step is ever sent to a worker",
            file=sys.stderr,
        )
        return 2
    try:
        settings.require_shared_state()
        if not compare_with_reference(settings):
            return 2
        app = celery_app(cfg.celery_queue, cfg.celery_redelivery_seconds)
    except (ConfigError, ExecutionConfigError) as error:
        print(f"make worker: {error}", file=sys.stderr)
        return 2
    name = f"{args.name or f'e2i-{os.getpid()}'}@{socket.gethostname()}"
    # Before the pool forks: every pool process starts with them, and no step of a run
    # waits for an import (a worker's first GE or Feast step would, for seconds).
    seconds = preload_step_modules()
    print(
        f"E2I worker {name}: queue {cfg.celery_queue!r}, steps' modules imported in "
        f"{seconds:.1f} s",
        flush=True,
    )
    app.worker_main(
        [
            "worker",
            "--queues",
            cfg.celery_queue,
            "--hostname",
            name,
            "--concurrency",
            str(args.concurrency or cfg.max_concurrent),
            "--prefetch-multiplier",
            "1",
            "--loglevel",
            args.loglevel,
            "--without-gossip",
            "--without-mingle",
        ]
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
