"""Transient failures are retried through Dagster and nothing else is: real exceptions
from the drivers, and real runs of gated assets on a real instance."""

import sqlite3

import dagster as dg
import pytest
import redis

from e2i_platform.lib.gates import GateClosed, gated_asset
from e2i_platform.lib.transient import transient_cause, wait_seconds
from e2i_platform.settings import load_settings

from support import definitions, failed_steps, run


def _locked_write(path) -> sqlite3.OperationalError:
    """A real 'database is locked': another connection holds an exclusive lock."""
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE IF NOT EXISTS t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        sqlite3.connect(path, timeout=0).execute("INSERT INTO t VALUES (1)")
    except sqlite3.OperationalError as exc:
        return exc
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    raise AssertionError("the write was not refused")


def _refused() -> redis.ConnectionError:
    from services import free_port

    try:
        redis.Redis(port=free_port(), socket_connect_timeout=1, retry=None).ping()
    except redis.ConnectionError as exc:
        return exc
    raise AssertionError("nothing listens on a free port")


def _chained(outer: Exception, cause: Exception) -> Exception:
    try:
        raise outer from cause
    except Exception as exc:
        return exc


def test_what_is_transient(tmp_path):
    locked = _locked_write(tmp_path / "busy.db")
    refused = _refused()
    assert transient_cause(locked) is locked
    assert transient_cause(refused) is refused
    assert transient_cause(ConnectionResetError("peer went away")) is not None
    # Wrapped by a library: the cause chain is read.
    wrapped = _chained(RuntimeError("materialize failed"), refused)
    assert transient_cause(wrapped) is refused
    # Not transient: a verdict, bad data, a wrong password, anything else.
    assert transient_cause(_chained(GateClosed("gate schema closed"), refused)) is None
    assert transient_cause(dg.Failure("raw_triggers: 3 of 9 rows fail")) is None
    assert transient_cause(redis.AuthenticationError("invalid username-password pair")) is None
    assert transient_cause(sqlite3.OperationalError("no such table: t")) is None
    # A message decides only for its own class: the same words elsewhere are not a lock.
    assert transient_cause(ValueError("database is locked")) is None
    assert transient_cause(ValueError("bad value")) is None
    assert [wait_seconds(n, 2.0) for n in (1, 2, 3)] == [2.0, 4.0, 8.0]


def _flaky_asset(tmp_path, failures: int, error):
    """A gated asset whose first `failures` attempts raise `error()`."""
    attempts: list[int] = []

    @gated_asset(name="store_writer", group_name="test")
    def store_writer(context) -> int:
        """Stands in for a step writing a store."""
        attempts.append(context.retry_number)
        if len(attempts) <= failures:
            raise error()
        return len(attempts)

    return store_writer, attempts


def _retries(result) -> int:
    return sum(e.event_type_value == "STEP_UP_FOR_RETRY" for e in result.all_events)


@pytest.fixture
def fast_retries(e2i_home, monkeypatch):
    monkeypatch.setenv("E2I_MAX_RETRIES", "2")
    monkeypatch.setenv("E2I_RETRY_WAIT_SECONDS", "0.05")
    return load_settings()


def test_a_locked_database_is_retried_until_it_is_free(tmp_path, instance, fast_retries):
    asset, attempts = _flaky_asset(tmp_path, 2, lambda: _locked_write(tmp_path / "db.sqlite"))
    result = run(definitions(fast_retries, [asset]), instance, selection=["store_writer"])
    assert result.success, failed_steps(result)
    assert attempts == [0, 1, 2] and _retries(result) == 2
    assert result.output_for_node("store_writer") == 3


def test_retries_end_in_a_failure_that_names_the_cause(tmp_path, instance, fast_retries):
    asset, attempts = _flaky_asset(tmp_path, 10, _refused)
    result = run(definitions(fast_retries, [asset]), instance, selection=["store_writer"])
    assert not result.success and attempts == [0, 1, 2] and _retries(result) == 2
    message = failed_steps(result)["store_writer"]
    assert "store_writer: transient failure persisted after 3 attempts (2 retries)" in message
    assert "ConnectionError: Error 111 connecting to" in message


@pytest.mark.parametrize(
    "error",
    [
        lambda: dg.Failure("store_writer: 3 rows fail the contract"),
        lambda: _chained(GateClosed("gate schema on raw_triggers closed"), _refused()),
        lambda: redis.AuthenticationError("invalid username-password pair"),
    ],
    ids=["bad_data", "gate_closed", "wrong_password"],
)
def test_a_verdict_or_a_wrong_password_is_never_retried(tmp_path, instance, fast_retries, error):
    asset, attempts = _flaky_asset(tmp_path, 10, error)
    result = run(definitions(fast_retries, [asset]), instance, selection=["store_writer"])
    assert not result.success and attempts == [0] and _retries(result) == 0
