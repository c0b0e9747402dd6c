"""Real PostgreSQL and Redis for the integration lane (provided by tests/lanes.py).

A missing server is a failure, never a skip: `make test` starts private servers
when the machine has none, and a direct `pytest` run falls back to the machine's.
"""

import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest
import redis

# The per-test PostgreSQL databases (shared with the distributed lane).
from database_fixtures import DEFAULT_POSTGRES, postgres_database, psycopg2_url  # noqa: E402,F401

from services import free_port


class PrivateRedis:
    """A redis-server of the test's own on a free port, keeping nothing on disk: it can be
    stopped (a store that is down) and started again on the same port, empty (a store
    that restarted and lost its data)."""

    def __init__(self):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1"]
            + ["--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        for _ in range(100):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"private redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    server.start()
    yield server
    server.stop()
