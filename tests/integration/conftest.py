"""Real PostgreSQL and Redis for the integration lane (provided by tests/lanes.py).

A missing server is a failure, never a skip: `make test` starts private servers
when the machine has none, and a direct `pytest` run falls back to the machine's.
"""

import os
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import pytest

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
