"""A several-machines deployment on one machine, for the distributed lane and its benchmark.

Shared services: the machine's PostgreSQL (Dagster storage, Feast's SQL registry, MLflow's
backend, Optuna and the locks, each in a database of its own) and Redis (Celery broker and
the online store, under keys of this cluster's own), an S3-compatible server (moto), and
an MLflow tracking server with proxied artifacts. "Machines": the launcher (the test
process, its code server and run worker) and N `make worker` processes, each with an
empty scratch directory as HOME and E2I_HOME; only the services are shared.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from database_fixtures import as_psycopg2, fresh_database
from mlflow_server import mlflow_server
from s3_server import CREDENTIALS, moto_server, new_bucket

from services import MACHINE_REDIS_URL, REDIS_ENV

WORKER_START_SECONDS = 90


@dataclass
class Cluster:
    root: Path
    env: dict[str, str]  # what every machine shares (services, executor, stores)
    queue: str
    project: str
    bucket: str
    endpoint: str
    dagster_pg: str
    workers: dict[str, subprocess.Popen] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)

    def machine_env(self, name: str) -> dict[str, str]:
        """The environment of one machine: the shared settings, and HOME and E2I_HOME in a
        scratch directory of its own (created empty)."""
        scratch = self.root / "machines" / name
        (scratch / "home").mkdir(parents=True, exist_ok=True)
        (scratch / "e2i").mkdir(parents=True, exist_ok=True)
        return {**self.env, "HOME": str(scratch / "home"), "E2I_HOME": str(scratch / "e2i")}

    def scratch(self, name: str) -> Path:
        return self.root / "machines" / name

    def start_worker(self, name: str, concurrency: int = 1) -> None:
        log = self.root / f"{name}.log"
        self.logs[name] = log
        self.workers[name] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "e2i_platform.ops.worker",
                "--name",
                name,
                "--concurrency",
                str(concurrency),
            ],
            env=self.machine_env(name),
            cwd=self.scratch(name),
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + WORKER_START_SECONDS
        waiting = set(self.workers)
        while waiting and time.monotonic() < deadline:
            for name in list(waiting):
                if self.workers[name].poll() is not None:
                    raise RuntimeError(
                        f"worker {name} exited: {self.logs[name].read_text()[-3000:]}"
                    )
                if " ready." in self.logs[name].read_text():
                    waiting.discard(name)
            time.sleep(0.3)
        if waiting:
            raise RuntimeError(f"workers {sorted(waiting)} not ready in {WORKER_START_SECONDS} s")

    def kill(self, name: str) -> None:
        os.killpg(self.workers[name].pid, 9)
        self.workers[name].wait(10)

    def stop_workers(self) -> None:
        for proc in self.workers.values():
            stop_process_group(proc)


def stop_process_group(proc: subprocess.Popen, grace: float = 30) -> None:
    """SIGTERM to the process's group (a Celery worker's pool children too), SIGKILL
    after `grace` seconds."""
    if proc.poll() is None:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(10)


def files_under(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


def _delete_own_keys(redis_url: str, patterns: list[str]) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    for pattern in patterns:
        keys = list(client.scan_iter(match=pattern, count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])


@contextmanager
def cluster(root: Path, sizes: dict[str, str]) -> Iterator[Cluster]:
    """The shared services and environment; workers are started by the caller."""
    tag = uuid.uuid4().hex[:10]
    queue, project = f"e2i-dist-{tag}", f"e2i_dist_{tag}"
    redis_url = os.environ.get(REDIS_ENV, MACHINE_REDIS_URL)
    with ExitStack() as stack:
        dagster_db = as_psycopg2(stack.enter_context(fresh_database()))
        feast_db = as_psycopg2(stack.enter_context(fresh_database()))
        mlflow_db = as_psycopg2(stack.enter_context(fresh_database()))
        optuna_db = as_psycopg2(stack.enter_context(fresh_database()))
        endpoint = stack.enter_context(moto_server())
        bucket = new_bucket(endpoint)
        tracking = stack.enter_context(
            mlflow_server(mlflow_db, root / "services" / "mlflow-artifacts", root / "services")
        )
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("E2I_", "MLFLOW_", "OPTUNA_", "DAGSTER_", "AWS_"))
        }
        env.update(sizes)
        env.update(
            {
                "E2I_ENV": "prod",
                "E2I_SOURCE_POLICY": "auto",  # generated tables: no landing files to place
                # Timelines end now (prod floors them to the day: a day-old newest event
                # would be stale to the freshness gate), the same on every machine.
                "E2I_ANCHOR": datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="seconds"),
                "E2I_SCHEDULES_RUNNING": "false",
                "E2I_FEAST_PROJECT": project,
                "DAGSTER_PG_URL": dagster_db,
                "REDIS_URL": redis_url,
                "E2I_EXECUTOR": "celery",
                "E2I_CELERY_QUEUE": queue,
                # The step of a killed worker goes to another after 45 s: longer than any
                # step on the test's data (the longest, hpo_study's slot at 6 trials, takes
                # about 5 s; the whole of hpo_study at 30 trials 18 s), which a step
                # running past it would be run twice. The run waits this long after the
                # kill, so it is most of the distributed lane's time.
                "E2I_CELERY_REDELIVERY_SECONDS": "45",
                "E2I_STORE_URL": f"s3://{bucket}/e2i",
                "AWS_ENDPOINT_URL": endpoint,
                **CREDENTIALS,
                "E2I_LOCK_DB_URL": dagster_db,
                "E2I_FEAST_REGISTRY": "sql",
                "E2I_FEAST_REGISTRY_URL": feast_db,
                "MLFLOW_TRACKING_URI": tracking,
                "OPTUNA_STORAGE_URL": optuna_db,
                # Usage telemetry would write under each machine's HOME.
                "MLFLOW_DISABLE_TELEMETRY": "true",
                "FEAST_USAGE": "False",
                "DO_NOT_TRACK": "1",
            }
        )
        found = Cluster(root, env, queue, project, bucket, endpoint, dagster_db)
        try:
            yield found
        finally:
            found.stop_workers()
            _delete_own_keys(redis_url, [f"{queue}:*", f"*{project}"])
