"""Real PostgreSQL and Redis for the integration lane (provided by tests/lanes.py).

A missing server is a failure, never a skip: `make test` starts private servers
when the machine has none, and a direct `pytest` run falls back to the machine's.
"""

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import pytest
import redis

from services import free_port

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"


def _with_database(url: str, database: str, scheme: str | None = None) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}", scheme=scheme or parts.scheme))


@pytest.fixture
def postgres_database() -> Iterator[str]:
    """A fresh database for this test on the real server; dropped afterwards.

    Yields a `postgresql://` URL to it."""
    admin_url = os.environ.get("E2I_TEST_POSTGRES_URL", DEFAULT_POSTGRES)
    name = f"e2i_test_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(admin_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_database(admin_url, name)
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def psycopg2_url(postgres_database: str) -> str:
    """The same database with the scheme dagster-postgres needs under SQLAlchemy 2.1."""
    return _with_database(
        postgres_database,
        urlsplit(postgres_database).path.lstrip("/"),
        scheme="postgresql+psycopg2",
    )


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
