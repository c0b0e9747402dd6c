"""Write-audit-publish for the warehouse: a new value is staged, and becomes the
published value only when every blocking check of its asset passed on it.

The warehouse is `<store>/warehouse`, where `<store>` is the home on this machine's
disk or, with `platform.store.url`, an object store every machine shares
(`lib.store`); the layout and the rules are the same on both.

Dagster runs an asset's checks after its IO manager stored the value (checks read
the stored value), so the IO manager cannot write where readers look. Instead:

    warehouse/.staged/<asset>/<run_id>.<ext>   the value a run materialized (audited)
    warehouse/<asset>.<ext>                    the published value: what external
                                               readers and later runs read
    warehouse/.published/<asset>.json          which run's value is published, its
                                               sha256, when, after which checks; its
                                               `path` is relative to the warehouse, so
                                               a copy of the home names its own file

A blocking check that passes stamps its pass next to the staged value; the check
that completes the set publishes (under a lock, so two checks finishing together
publish once). A rejected value stays staged, its path named in the check's
metadata; the published value and its record are untouched, byte for byte.

Every file is written whole (`lib.store.atomic_write`). Publishing replaces the
published file in one step: on disk a hard link to the staged file renamed over it;
on an object store a server-side copy of the staged object (no hard links there).
The lock is a lock file on disk (this machine's processes) and a PostgreSQL advisory
lock for an object store (every machine's; `lib.store.lock`).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from e2i_platform.lib import store
from e2i_platform.lib.store import atomic_write, file_lock, is_remote, store_root
from e2i_platform.lib.versions import sha256_file

if TYPE_CHECKING:
    from upath import UPath

__all__ = [
    "Publications",
    "PublishedValueChanged",
    "atomic_write",
    "atomic_write_json",
    "file_lock",
    "note_loaded",
    "take_loaded",
    "write_json",
]

WAREHOUSE = "warehouse"
STAGED = ".staged"
RECORDS = ".published"

# What each check step loaded, by (run id, step key): {asset: run id of the value}.
# The IO manager fills it while loading a step's inputs; the check that runs next in
# the same process takes it, so its verdict records exactly what it read.
_LOADED: dict[tuple[str, str], dict[str, str]] = {}
# The sha256 of the bytes a check step read of the value it audits, by (run id, step
# key): a pass is bound to those bytes, not only to the run that wrote them (a step
# attempt delivered twice can write the same run's staged value again).
_JUDGED_BYTES: dict[tuple[str, str], str] = {}


# sha256 of published files by their state (on disk: inode, size, mtime; in an object
# store: size and ETag): a file is hashed once, not per read.
_HASHED: dict[tuple, str] = {}


def note_loaded(
    run_id: str, step_key: str, asset: str, value_run_id: str, sha256: str | None = None
) -> None:
    """A step read `asset`'s value of `value_run_id`; `sha256`: the bytes a check read of
    the value it audits."""
    _LOADED.setdefault((run_id, step_key), {})[asset] = value_run_id
    if sha256 is not None:
        _JUDGED_BYTES[(run_id, step_key)] = sha256


def take_loaded(run_id: str, step_key: str) -> tuple[dict[str, str], str | None]:
    """What a step read ({asset: run id}) and the sha256 of the audited value's bytes."""
    return _LOADED.pop((run_id, step_key), {}), _JUDGED_BYTES.pop((run_id, step_key), None)


def write_json(obj, path: Path) -> None:
    """JSON written and flushed to disk (callers make it atomic: `atomic_write_json`,
    or `Publications.stage`)."""
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=str)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_json(obj, path: Path | UPath) -> None:
    atomic_write(path, lambda p: write_json(obj, p))


class PublishedValueChanged(ValueError):
    """The published file is not the bytes its record names, and no publication is under
    way: someone changed it."""


class Publications:
    """Staged and published values of the assets stored under one warehouse directory
    (a local path, or a `UPath` in an object store)."""

    def __init__(self, warehouse: Path | UPath | str):
        self.warehouse = warehouse if hasattr(warehouse, "fs") else Path(warehouse)

    @classmethod
    def of(cls, home: str | Path, store_url: str | None) -> Publications:
        """The warehouse of a home's store: `<home>/warehouse`, or `<url>/warehouse`."""
        return cls(store_root(home, store_url) / WAREHOUSE)

    @classmethod
    def for_settings(cls, settings) -> Publications:
        """The warehouse the platform's settings name (`home`, `platform.store.url`); an
        object with a `home` only (a stand-in for the settings) names the local disk."""
        store_settings = getattr(getattr(settings, "platform", None), "store", None)
        return cls.of(settings.home, store_settings.url if store_settings else None)

    @property
    def remote(self) -> bool:
        return is_remote(self.warehouse)

    # --- where things are ----------------------------------------------------------

    def published_path(self, asset: str, ext: str) -> Path | UPath:
        return self.warehouse / f"{asset}.{ext}"

    def staged_path(self, asset: str, run_id: str, ext: str) -> Path | UPath:
        return self.warehouse / STAGED / asset / f"{run_id}.{ext}"

    def _passes_path(self, asset: str, run_id: str) -> Path | UPath:
        return self.warehouse / STAGED / asset / f"{run_id}.passed.json"

    def record_path(self, asset: str) -> Path | UPath:
        return self.warehouse / RECORDS / f"{asset}.json"

    def record(self, asset: str) -> dict | None:
        """The publication record, or None when nothing (readable) is published."""
        try:
            return json.loads(self.record_path(asset).read_text())
        except (OSError, ValueError):
            return None

    def published_run(self, asset: str) -> str | None:
        record = self.record(asset)
        return record["run_id"] if record else None

    # --- staging and publishing ----------------------------------------------------

    def stage(
        self, asset: str, run_id: str, ext: str, write: Callable[[Path], None]
    ) -> Path | UPath:
        """Write a run's value beside the others (atomically), not where readers look;
        `write` writes a local file."""
        return atomic_write(self.staged_path(asset, run_id, ext), write)

    def value_path(self, asset: str, run_id: str, ext: str) -> Path | UPath | None:
        """Where the value a run materialized is now: staged, or published after its gates."""
        staged = self.staged_path(asset, run_id, ext)
        if staged.exists():
            return staged
        record = self.record(asset)
        published = self.published_path(asset, ext)
        if record and record["run_id"] == run_id and published.exists():
            return published
        return None

    def lock(self, asset: str, timeout: float = store.LOCK_TIMEOUT_S):
        """One publisher of an asset at a time (on every machine that shares the store);
        waiting longer than `timeout` seconds raises `lib.store.LockTimeout`."""
        return store.lock(self.warehouse / STAGED / asset / ".lock", timeout)

    def passes(self, asset: str, run_id: str) -> dict[str, dict]:
        """The checks that passed a run's value, each with the evidence it judged on."""
        # Only "no passes yet" (no file) or an unreadable file is none: any other error
        # (a store that is briefly unreachable) is raised, or the next pass would be
        # written over the passes already stamped.
        try:
            return dict(json.loads(self._passes_path(asset, run_id).read_text()))
        except (FileNotFoundError, ValueError, TypeError):
            return {}

    def set_pass(self, asset: str, run_id: str, check: str, stamp: dict | None) -> dict:
        """Record a check's pass of a run's value with its evidence (or withdraw it, with
        None); call under `lock`."""
        current = self.passes(asset, run_id)
        if stamp is None:
            current.pop(check, None)
        else:
            current[check] = stamp
        atomic_write_json(current, self._passes_path(asset, run_id))
        return current

    def publish(
        self, asset: str, run_id: str, ext: str, checks: list[str], judged: str | None = None
    ) -> dict:
        """Make a run's staged value the published one: the file readers see is replaced
        atomically, then the record says which run it is. With `judged` (the sha256 of
        the bytes the checks passed), bytes that differ are never published: a
        `ValueError` names both, and the published value stays. Call under `lock`."""
        staged = self.staged_path(asset, run_id, ext)
        if not staged.exists():
            raise FileNotFoundError(f"{asset}: no staged value of run {run_id} at {staged}")
        target = self.published_path(asset, ext)
        # The bytes are fixed first (a link to the staged file on disk, a copy of the
        # object in a store) and hashed there: a writer that replaces the staged value
        # now cannot change what is published after it was compared.
        if self.remote:
            fixed = staged.with_name(f"{staged.name}.publishing")
            self.warehouse.fs.copy(staged.path, fixed.path)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            fixed = target.with_name(f".{target.name}.{run_id}.tmp")
            fixed.unlink(missing_ok=True)
            os.link(staged, fixed)  # same file system: no copy, the staged path stays valid
        digest = sha256_file(fixed)
        if judged is not None and digest != judged:
            _remove(fixed)
            raise ValueError(
                f"{asset}: the staged value of run {run_id} at {staged} is not the value its "
                f"checks passed (sha256 {digest[:12]}… now, {judged[:12]}… judged): it was "
                "written again after they judged it; not published"
            )
        if self.remote:
            # One server-side copy: readers of the key see the old object or the new one.
            self.warehouse.fs.copy(fixed.path, target.path)
            _remove(fixed)
        else:
            os.replace(fixed, target)
        record = {
            "asset": asset,
            "run_id": run_id,
            "path": target.relative_to(self.warehouse).as_posix(),
            "sha256": digest,
            "published_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "after_checks": sorted(checks),
        }
        atomic_write_json(record, self.record_path(asset))
        _remove(staged)
        _remove(self._passes_path(asset, run_id))
        return record

    def _state(self, path) -> tuple:
        """What identifies the bytes of a file without reading it: path, inode, size and
        mtime on disk; path, size and ETag (else modification time) in an object store."""
        if self.remote:
            info = path.fs.info(path.path)
            changed = info.get("ETag") or info.get("LastModified") or info.get("mtime")
            return (str(path), info.get("size"), str(changed))
        st = path.stat()
        return (str(path), st.st_ino, st.st_size, st.st_mtime_ns)

    def intact(self, asset: str, ext: str, record: dict) -> bool:
        """Whether the published file still holds the bytes its record names (hashed once
        per file state, `_state`)."""
        path = self.published_path(asset, ext)
        try:
            state = self._state(path)
        except OSError:
            return False
        if state not in _HASHED:
            if len(_HASHED) > 4096:
                _HASHED.clear()
            _HASHED[state] = sha256_file(path)
        return _HASHED[state] == record["sha256"]

    def _read_consistent(self, asset: str, ext: str, read: Callable) -> tuple[dict, object] | None:
        """(record, value) when the published file holds the record's bytes and did not
        change while read; None when it does not."""
        record, path = self.record(asset), self.published_path(asset, ext)
        if record is None or not path.exists():
            raise FileNotFoundError(
                f"{asset}: no published value at {path}: it was never materialized, or "
                "no value of it has passed its gates yet"
            )
        before = self._state(path)
        if self.intact(asset, ext, record):
            value = read(path)
            if self._state(path) == before:
                return record, value
        return None

    def read_published(self, asset: str, ext: str, read: Callable) -> tuple[dict, object]:
        """The published value (`read(path)`) with the record it is the value of.

        A reader takes no lock, so a publication can land while it reads: the file is
        replaced first, the record after. A file that does not match its record, or
        that changed while it was read, is therefore read once more under the
        publication lock (no publication can land then); only a mismatch there is
        another actor's change (`PublishedValueChanged`)."""
        found = self._read_consistent(asset, ext, read)
        if found is None:
            with self.lock(asset):
                found = self._read_consistent(asset, ext, read)
        if found is not None:
            return found
        record, path = self.record(asset), self.published_path(asset, ext)
        raise PublishedValueChanged(
            f"{asset}: the published file {path} was changed after it was published "
            f"(run {record['run_id']}; its sha256 differs from {self.record_path(asset)}): "
            f"refusing to read it. Materialize {asset} again."
        )

    def problem(self, asset: str, ext: str, run_id: str) -> str | None:
        """Why the published value is not the intact value of `run_id`, or None."""
        record = self.record(asset)
        path = self.published_path(asset, ext)
        if record is None:
            return f"no published value (no readable {self.record_path(asset)})"
        if record["run_id"] != run_id:
            return f"the published value is from run {record['run_id']}, not run {run_id}"
        if not path.exists():
            return f"its published file {path} is missing"
        if not self.intact(asset, ext, record):
            return f"its published file {path} was changed after publication (sha256 differs)"
        return None


def _remove(path: Path | UPath) -> None:
    """Delete a file if it is there."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
