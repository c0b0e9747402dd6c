"""Where durable values live: under the home on this machine's disk, or in an object
store every machine reads (`platform.store.url`, e.g. `s3://bucket/prefix`, through
fsspec and universal-pathlib), with the two primitives that stay correct on either
when several processes on several machines write:

- `atomic_write`: readers see the old value or the new one, never half of one. On disk
  a temporary file renamed into place; on an object store a local temporary file
  uploaded in one request (an S3 PUT, or a completed multipart upload, is atomic for
  readers).
- `lock`: one holder at a time. On disk `fcntl.flock` on a lock file (the machine's
  processes); on an object store a PostgreSQL advisory lock, taken on a connection of
  its own to the database of `E2I_LOCK_DB_URL` (else `DAGSTER_PG_URL`), keyed by a 64-bit
  hash of the lock's URL. PostgreSQL releases it when the holder exits the block, and
  when its process or machine dies (the connection closes; TCP keepalives notice a
  vanished machine).

The object store's endpoint and credentials come from the environment only
(`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, read by botocore);
nothing here writes them anywhere.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from upath import UPath

LOCK_DB_ENV = "E2I_LOCK_DB_URL"
LOCK_DB_FALLBACK_ENV = "DAGSTER_PG_URL"
# How long a lock is waited for before the wait fails, naming the lock. Publishing holds
# a lock for a hash and a copy; release manifests for a few small files.
LOCK_TIMEOUT_S = 300.0


class LockTimeout(TimeoutError):
    """A lock was not acquired in time."""


class LockDatabaseMissing(RuntimeError):
    """A lock on an object store needs a PostgreSQL database and none is configured."""


def store_root(home: str | Path, url: str | None) -> Path | UPath:
    """The root of durable values: `home` on this disk when `url` is empty, else the
    object store at `url` (its endpoint and credentials from the environment)."""
    if not url:
        return Path(home)
    from upath import UPath

    # No listings cache: another machine may have written since this process listed.
    # The endpoint is passed, not left to botocore: fsspec caches a filesystem per
    # argument set, and one built for an earlier endpoint must not be reused.
    options = {"use_listings_cache": False}
    if endpoint := os.environ.get("AWS_ENDPOINT_URL"):
        options["endpoint_url"] = endpoint
    return UPath(url.rstrip("/"), **options)


def is_remote(path: Path | UPath) -> bool:
    """Whether `path` is in an object store rather than on this machine's disk."""
    return not isinstance(path, Path)


def atomic_write(path: Path | UPath, write: Callable[[Path], None]) -> Path | UPath:
    """`write` a local file, then make it the value at `path` in one step: readers see
    the old value or the new one, never half of one."""
    if is_remote(path):
        with tempfile.TemporaryDirectory(prefix="e2i-upload-") as tmpdir:
            tmp = Path(tmpdir) / path.name
            write(tmp)
            path.fs.put_file(str(tmp), path.path)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def lock(path: Path | UPath, timeout: float = LOCK_TIMEOUT_S):
    """An exclusive lock named by `path` for the block, held across this machine's
    processes (on disk) or across machines (object store); not reentrant. Waiting
    longer than `timeout` seconds raises `LockTimeout` naming the lock."""
    if is_remote(path):
        return advisory_lock(str(path), timeout)
    return file_lock(path, timeout)


@contextmanager
def file_lock(path: Path, timeout: float | None = None) -> Iterator[None]:
    """`fcntl.flock` on `path` (created) for the block: blocking, or polled until
    `timeout` seconds passed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        if timeout is None:
            fcntl.flock(fh, fcntl.LOCK_EX)
        else:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise LockTimeout(
                            f"lock {path} not acquired within {timeout:g} s: another process "
                            "holds it"
                        ) from None
                    time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def lock_key(name: str) -> int:
    """The signed 64-bit key of PostgreSQL's advisory lock for the lock `name`."""
    digest = hashlib.sha256(name.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def lock_database_url() -> str:
    """The libpq URL of the lock database: E2I_LOCK_DB_URL, else DAGSTER_PG_URL."""
    url = os.environ.get(LOCK_DB_ENV) or os.environ.get(LOCK_DB_FALLBACK_ENV)
    if not url:
        raise LockDatabaseMissing(
            f"the store is an object store, whose locks are PostgreSQL advisory locks: set "
            f"{LOCK_DB_ENV} (or {LOCK_DB_FALLBACK_ENV}) to a PostgreSQL URL every machine "
            "reaches"
        )
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0]  # postgresql+psycopg2 (SQLAlchemy) -> postgresql
    return urlunsplit(parts._replace(scheme=scheme))


@contextmanager
def advisory_lock(name: str, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """`pg_advisory_lock` on a connection of its own for the block (see module doc)."""
    import psycopg2
    import psycopg2.errors

    conn = psycopg2.connect(
        lock_database_url(),
        connect_timeout=10,
        application_name="e2i-lock",
        # Keepalives on both ends: the client's notice a dead server, the server's
        # (options) a vanished holder, whose locks PostgreSQL then frees within about a
        # minute instead of after the OS's two-hour keepalive idle time.
        keepalives=1,
        keepalives_idle=30,
        keepalives_interval=10,
        keepalives_count=3,
        options=(
            "-c tcp_keepalives_idle=30 -c tcp_keepalives_interval=10 "
            "-c tcp_keepalives_count=3 -c tcp_user_timeout=60000"
        ),
    )
    try:
        conn.autocommit = True
        key = lock_key(name)
        with conn.cursor() as cur:
            cur.execute(
                "SELECT set_config('lock_timeout', %s, false)", (str(max(1, int(timeout * 1000))),)
            )
            try:
                cur.execute("SELECT pg_advisory_lock(%s)", (key,))
            except psycopg2.errors.LockNotAvailable:
                raise LockTimeout(
                    f"lock {name} (PostgreSQL advisory lock {key}) not acquired within "
                    f"{timeout:g} s: another process holds it"
                ) from None
        try:
            yield
        finally:
            # A connection that dropped has already freed the lock; its error must not
            # replace the block's own outcome (a release that was published).
            with contextlib.suppress(psycopg2.Error), conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(%s)", (key,))
    finally:
        conn.close()
