"""A fresh PostgreSQL database per test on the real server (the machine's, or the
private one `make test` started): fixtures for the integration and distributed lanes.
A conftest imports them to use them."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import pytest

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"


def _with_database(url: str, database: str, scheme: str | None = None) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}", scheme=scheme or parts.scheme))


@contextmanager
def fresh_database() -> Iterator[str]:
    """A database of its own on the real server, dropped on exit; its `postgresql://` URL."""
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


def as_psycopg2(url: str) -> str:
    """The same database with the scheme dagster-postgres (and Feast, MLflow) need under
    SQLAlchemy 2.1."""
    return _with_database(url, urlsplit(url).path.lstrip("/"), scheme="postgresql+psycopg2")


@pytest.fixture
def postgres_database() -> Iterator[str]:
    """A fresh database for this test on the real server; dropped afterwards.

    Yields a `postgresql://` URL to it."""
    with fresh_database() as url:
        yield url


@pytest.fixture
def psycopg2_url(postgres_database: str) -> str:
    """The same database with the scheme dagster-postgres needs under SQLAlchemy 2.1."""
    return _with_database(
        postgres_database,
        urlsplit(postgres_database).path.lstrip("/"),
        scheme="postgresql+psycopg2",
    )
