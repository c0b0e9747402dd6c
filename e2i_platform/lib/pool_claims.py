"""Pool slots that hold on a SQLite instance: Dagster's SQLite event log storage with its
concurrency claims serialized across processes.

Dagster claims a pool slot by reading a free slot row and then updating it
(`SqlEventLogStorage._claim_concurrency_slot`, `SELECT ... FOR UPDATE SKIP LOCKED`).
PostgreSQL locks the row; SQLite ignores `FOR UPDATE`, so two processes claiming at the
same moment both read the free slot and both write it: a pool of one slot admitted two
steps in 23 of 100 simultaneous claims here (tests/integration/test_pools.py saw both
`online_features` steps run together). This storage is Dagster's own, with every
operation that creates, assigns or frees slots done under an exclusive lock on a file beside the
index database (`fcntl.flock`), so claims queue as they do on PostgreSQL. Nothing else
changes: same files, same schema, readable by the stock class.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

LOCK_FILE = ".pool_claims.lock"
_HELD = threading.local()


class SerializedClaimsSqliteEventLogStorage(SqliteEventLogStorage):
    """`SqliteEventLogStorage` whose pool slot claims and releases never interleave."""

    def __init__(self, base_dir: str, inst_data=None):
        # The rendered dagster.yaml names its home's absolute path: one copied with its
        # home to another path would read and write the original's event log. Dagster's
        # processes open the instance of DAGSTER_HOME, so that is what it must be under.
        home = os.environ.get("DAGSTER_HOME")
        if home and not os.path.realpath(base_dir).startswith(os.path.realpath(home) + os.sep):
            raise RuntimeError(
                f"{os.path.join(home, 'dagster.yaml')} names the event log {base_dir}, which "
                f"is not under DAGSTER_HOME ({home}): the file was rendered for another home "
                "(copied with it?). Render it for this one: `python -m "
                "e2i_platform.ops.instance` (or `make run`) with E2I_HOME set to this home."
            )
        super().__init__(base_dir, inst_data=inst_data)

    @classmethod
    def from_config_value(cls, inst_data, config_value) -> SerializedClaimsSqliteEventLogStorage:
        return cls(inst_data=inst_data, **config_value)

    @contextmanager
    def _claims_lock(self) -> Iterator[None]:
        # Re-entrant within a thread: a locked method that calls another one must not wait
        # for itself (flock locks per open file, not per process).
        if getattr(_HELD, "storage", None) is self:
            yield
            return
        fd = os.open(os.path.join(self._base_dir, LOCK_FILE), os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            _HELD.storage = self
            yield
        finally:
            _HELD.storage = None
            os.close(fd)  # closing releases the lock

    def initialize_concurrency_limit_to_default(self, concurrency_key):
        # Two first claims of a new pool would otherwise each create its default slots.
        with self._claims_lock():
            return super().initialize_concurrency_limit_to_default(concurrency_key)

    def claim_concurrency_slot(self, concurrency_key, run_id, step_key, priority=None):
        with self._claims_lock():
            return super().claim_concurrency_slot(concurrency_key, run_id, step_key, priority)

    def free_concurrency_slot_for_step(self, run_id, step_key):
        with self._claims_lock():
            return super().free_concurrency_slot_for_step(run_id, step_key)

    def free_concurrency_slots_for_run(self, run_id):
        with self._claims_lock():
            return super().free_concurrency_slots_for_run(run_id)

    def delete_concurrency_limit(self, concurrency_key):
        with self._claims_lock():
            return super().delete_concurrency_limit(concurrency_key)

    def set_concurrency_slots(self, concurrency_key, num):
        with self._claims_lock():
            return super().set_concurrency_slots(concurrency_key, num)
