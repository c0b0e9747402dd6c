"""The files of one training run (a variant directory `v<N>`), the completion contract
they are judged by, and how they are written and cleared.

    v<N>/
        model.txt       the trained model (non-empty)
        metrics.json    a non-empty JSON object
        metadata.json   a non-empty JSON object, written last: the commit point

A variant is complete when every required file is present, the model file is not
empty and both JSON files hold non-empty objects; anything else (missing, empty,
corrupt, partial) is incomplete, with a reason. `write_run` writes each file to a temp
file in the same directory, fsyncs it and renames it into place, with metadata.json
last, so a crash mid-write never looks complete.

A variant is on this machine's disk or in an object store (a `UPath`, `lib.store`),
in the same layout. An object store has no directories and no rename: there an
allocated variant exists by its marker object `v<N>/.allocated`, and each file is
written whole (`lib.store.atomic_write`: a local temp file checked non-empty, then one
PUT), with metadata.json last, as on disk.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from e2i_platform.lib import store as stores

MODEL_FILE = "model.txt"
METRICS_FILE = "metrics.json"
METADATA_FILE = "metadata.json"
REQUIRED_FILES = (MODEL_FILE, METRICS_FILE, METADATA_FILE)
# In an object store (no directories), the object that makes an allocated v<N> exist.
ALLOCATED_MARKER = ".allocated"

# A variant and its model file below the home, as records store them (relative to the
# home, `lib.home_paths`): <home>/models/<model>/spec-<8>_exec-<8>/v<N>[/model.txt].
VARIANT_LAYOUT = ("models", r"[^/]+", r"spec-[^/]{8}_exec-[^/]{8}", r"v[1-9][0-9]*")
MODEL_FILE_LAYOUT = (*VARIANT_LAYOUT, re.escape(MODEL_FILE))

_TMP_SUFFIX = ".tmp"


def in_object_store(path) -> bool:
    """Whether `path` is in an object store (a `UPath`), not on this disk."""
    return hasattr(path, "fs")


def as_path(path) -> Path:
    """`path` as given when it is an object store's (`UPath`), else a `Path`."""
    return path if in_object_store(path) else Path(path)


# --- completion contract ------------------------------------------------------------------


@dataclass(frozen=True)
class Completion:
    complete: bool
    reason: str


def check_completion(path: Path) -> Completion:
    """The completion contract for one variant directory (on disk or in the store)."""
    path = as_path(path)
    if not path.is_dir():
        return Completion(False, f"{path.name} does not exist")
    for name in REQUIRED_FILES:
        if not (path / name).is_file():
            return Completion(False, f"missing {name}")
    try:
        if (path / MODEL_FILE).stat().st_size == 0:
            return Completion(False, f"{MODEL_FILE} is empty")
    except OSError as exc:
        return Completion(False, f"{MODEL_FILE} is not readable: {exc}")
    for name in (METRICS_FILE, METADATA_FILE):
        problem = _json_object_problem(path / name)
        if problem:
            return Completion(False, problem)
    return Completion(True, "complete")


def _json_object_problem(file: Path) -> str | None:
    name = file.name
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return f"{name} is not readable: {exc}"
    if not text.strip():
        return f"{name} is empty"
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return f"{name} is not valid JSON: {exc}"
    if not isinstance(value, dict):
        return f"{name} is not a JSON object (got {type(value).__name__})"
    if not value:
        return f"{name} is an empty JSON object"
    return None


def finished_at(path: Path) -> datetime:
    """When a complete run finished: metadata `finished_at`, else metadata.json's mtime (UTC)."""
    meta_file = path / METADATA_FILE
    value = _read_json_object(meta_file).get("finished_at")
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            parsed = None
        if parsed is not None:
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    try:
        mtime = meta_file.stat().st_mtime
    except (OSError, AttributeError, TypeError):  # an object store may not say
        mtime = 0.0
    return datetime.fromtimestamp(mtime, UTC)


def _read_json_object(file: Path) -> dict:
    try:
        value = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


# --- writing and clearing -------------------------------------------------------------------


def write_run(
    path: Path, write_model: Callable[[Path], None], metrics: dict, metadata: dict
) -> None:
    """Write a run's outputs atomically; metadata.json last, as the commit point.

    Files of an earlier attempt in `path` are removed first, so a failure here leaves
    the variant incomplete. `finished_at` (UTC ISO) is added to metadata when absent.
    No temp files are left behind, whatever raises.
    """
    path = as_path(path)
    for label, value in (("metrics", metrics), ("metadata", metadata)):
        if not isinstance(value, dict) or not value:
            raise ValueError(f"{label} must be a non-empty dict, got {value!r}")
    metadata = dict(metadata)
    metadata.setdefault("finished_at", datetime.now(UTC).isoformat())
    metrics_text = _json_text(metrics)
    metadata_text = _json_text(metadata)

    if in_object_store(path):
        for name in reversed(REQUIRED_FILES):
            _unlink(path / name)
        _upload(path, MODEL_FILE, write_model)
        _upload(path, METRICS_FILE, _text_writer(metrics_text))
        _upload(path, METADATA_FILE, _text_writer(metadata_text))
        return

    path.mkdir(parents=True, exist_ok=True)
    # Uncommit first: the commit point goes before anything it vouches for.
    for name in reversed(REQUIRED_FILES):
        _unlink(path / name)
    _fsync_dir(path)

    _atomic_write(path, MODEL_FILE, write_model)
    _atomic_write(path, METRICS_FILE, _text_writer(metrics_text))
    _atomic_write(path, METADATA_FILE, _text_writer(metadata_text))


def clear_run(path: Path) -> None:
    """Remove everything inside `path` (a variant directory), keeping the directory (in
    an object store: its marker object)."""
    if in_object_store(path):
        prefix = path.path.rstrip("/") + "/"
        for key in path.fs.find(prefix):
            if key != prefix + ALLOCATED_MARKER:
                path.fs.rm_file(key)
        return
    for dirpath, dirnames, filenames in os.walk(path, topdown=False):
        for name in filenames:
            _unlink(Path(dirpath) / name)
        for name in dirnames:
            sub = Path(dirpath) / name
            if sub.is_symlink():
                _unlink(sub)
            else:
                os.rmdir(sub)
    _fsync_dir(path)


def _json_text(value: dict) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str) + "\n"


def _text_writer(text: str) -> Callable[[Path], None]:
    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)

    return write


def _atomic_write(directory: Path, name: str, writer: Callable[[Path], None]) -> None:
    """writer(temp file in `directory`), check non-empty, fsync, rename to `name`."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=_TMP_SUFFIX, dir=directory)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        writer(tmp)
        _check_written(tmp, name)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, 0o644)
        os.replace(tmp, directory / name)
    except BaseException:
        _unlink(tmp)
        raise
    _fsync_dir(directory)


def _check_written(tmp: Path, name: str) -> None:
    """A writer must leave a non-empty file: an empty model file is never published."""
    try:
        size = tmp.stat().st_size
    except FileNotFoundError:
        raise RuntimeError(f"writing {name} left no file at {tmp}") from None
    if size == 0:
        raise RuntimeError(f"writing {name} produced an empty file")


def _upload(directory, name: str, writer: Callable[[Path], None]) -> None:
    """writer(local temp file), checked non-empty, then one PUT to `directory/name`."""

    def checked(tmp: Path) -> None:
        writer(tmp)
        _check_written(tmp, name)

    stores.atomic_write(directory / name, checked)


def _fsync_dir(directory: Path) -> None:
    """Make renames and unlinks in `directory` durable (best effort where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _unlink(path: Path) -> None:
    if in_object_store(path):
        if path.fs.exists(path.path):
            path.fs.rm_file(path.path)
        return
    Path(path).unlink(missing_ok=True)
