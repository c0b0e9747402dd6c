"""Retrying what is transient, and only that.

A step that talks to Redis, PostgreSQL, SQLite or MLflow can fail because the other
side is briefly away: a connection refused or reset, a timeout, a database that is
busy or locked. Those are retried through Dagster (`RetryRequested`: the retry shows in
the UI as a step up for retry, and the wait grows each time); once the retries are spent
the step fails naming the cause and the attempts. Everything else fails at once: a closed
gate (`GateClosed`) or any other `dg.Failure` (bad data, bad configuration) is a verdict,
and asking again cannot change it; a wrong password is not transient either.

Exceptions are recognised by class name and module along the cause chain, so no driver
is imported to classify one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import dagster as dg

# (module prefix, class name): transient whatever the message says.
_TRANSIENT_CLASSES = {
    ("redis", "ConnectionError"),
    ("redis", "TimeoutError"),
    ("redis", "BusyLoadingError"),
    ("psycopg2", "OperationalError"),
    ("psycopg2", "SerializationFailure"),
    ("psycopg2", "DeadlockDetected"),
    ("requests", "ConnectionError"),
    ("requests", "Timeout"),
    ("requests", "ConnectTimeout"),
    ("requests", "ReadTimeout"),
    ("urllib3", "NewConnectionError"),
    ("urllib3", "MaxRetryError"),
    ("builtins", "ConnectionRefusedError"),
    ("builtins", "ConnectionResetError"),
    ("builtins", "ConnectionAbortedError"),
    ("builtins", "BrokenPipeError"),
    ("builtins", "TimeoutError"),
}
# Subclasses of a transient class that are not transient: asking again will not help.
_NEVER = {
    ("redis", "AuthenticationError"),
    ("redis", "AuthenticationWrongNumberOfArgsError"),
    ("redis", "AuthorizationError"),
}
# (module prefix, class name, message fragments): transient when the message says so.
_TRANSIENT_MESSAGES = (
    ("sqlite3", "OperationalError", ("database is locked", "database table is locked")),
    ("sqlalchemy", "OperationalError", ("database is locked", "could not connect")),
    ("mlflow", "MlflowException", ("Connection refused", "Max retries exceeded")),
)


def _names(exc: BaseException) -> set[tuple[str, str]]:
    return {(cls.__module__.split(".")[0], cls.__name__) for cls in type(exc).__mro__}


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def transient_cause(exc: BaseException) -> BaseException | None:
    """The exception in `exc`'s cause chain that makes it worth retrying, or None.

    A `dg.Failure` anywhere first in the chain (a closed gate, bad data) is never
    transient, whatever caused it."""
    for link in _chain(exc):
        if isinstance(link, dg.Failure):
            return None
        names = _names(link)
        if names & _NEVER:
            return None
        if names & _TRANSIENT_CLASSES:
            return link
        text = str(link)
        for module, name, fragments in _TRANSIENT_MESSAGES:
            if (module, name) in names and any(f in text for f in fragments):
                return link
    return None


def wait_seconds(attempt: int, first_wait_seconds: float) -> float:
    """The wait before retry `attempt` (1 for the first): doubling from the first wait."""
    return first_wait_seconds * 2 ** (attempt - 1)


@contextlib.contextmanager
def retry_transient(context, max_retries: int, first_wait_seconds: float) -> Iterator[None]:
    """Run a step body; a transient failure asks Dagster for a retry (`max_retries` in
    all, waits doubling from `first_wait_seconds`), then fails naming the cause."""
    asset = context.asset_key.to_user_string() if context.has_assets_def else context.op.name
    try:
        yield
    except dg.RetryRequested:
        raise
    except Exception as exc:
        cause = transient_cause(exc)
        if cause is None:
            raise
        why = f"{type(cause).__name__}: {cause}".strip()
        attempt = context.retry_number + 1
        if attempt > max_retries:
            raise dg.Failure(
                f"{asset}: transient failure persisted after {attempt} attempts "
                f"({max_retries} retries): {why}",
                metadata={"attempts": attempt, "cause": why},
            ) from exc
        wait = wait_seconds(attempt, first_wait_seconds)
        context.log.warning(
            f"{asset}: transient failure, retry {attempt} of {max_retries} in {wait:g} s: {why}"
        )
        raise dg.RetryRequested(max_retries=max_retries, seconds_to_wait=wait) from exc
