"""Training runs: identity, output directories, run modes and the completion contract.

Layout::

    <root>/<model>/spec-<8>_exec-<8>/v<N>/
        model.txt       the trained model (non-empty)
        metrics.json    a non-empty JSON object
        metadata.json   a non-empty JSON object, written last: the commit point

The spec fingerprint names *what* is trained (training config, data versions of the
training set, feature service); the exec fingerprint names *how* (code version,
library versions, seed). Their first 8 hex digits name the directory; variants
v1, v2, ... of one spec/exec are separate attempts, allocated with an atomic
`os.mkdir` so concurrent starts (threads or processes) never share a number.

A variant is complete when every required file is present, the model file is not
empty and both JSON files hold non-empty objects; anything else (missing, empty,
corrupt, partial) is incomplete, with a reason. `ModelRuns.write` writes each file
to a temp file in the same directory, fsyncs it and renames it into place, with
metadata.json last, so a crash mid-write never looks complete.

The root is `<home>/models` on this machine's disk or, with `platform.store.url`,
`<store>/models` in the object store every machine shares (`lib.store.store_root`, a
`UPath`): the same layout on both. An object store has no directories and no rename:
there a variant is allocated under a lock of every machine (`lib.store.lock`, a
PostgreSQL advisory lock) by writing its marker object `v<N>/.allocated`, and each
file is written whole (`lib.store.atomic_write`: a local temp file checked non-empty,
then one PUT), with metadata.json last, as on disk.

Run modes (`ModelRuns.decide`):

* reuse_if_exists: reuse the newest complete variant; none, train a new one.
* force_new: always train a new variant.
* resume_if_incomplete: when the newest variant is incomplete, clear it and train
  again in place; when it is complete, reuse it; none, train a new one.
* continue_from_previous: continue from the newest complete run of the model
  under any spec/exec directory into a new variant; none, train from scratch.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, get_args

from e2i_platform.lib import store as stores
from e2i_platform.settings.models import RunMode

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

MODES: tuple[str, ...] = get_args(RunMode)
DEFAULT_LIBRARIES = ("lightgbm", "scikit-learn", "optuna", "mlflow", "pandas", "numpy", "feast")
NOT_INSTALLED = "not-installed"

_TMP_SUFFIX = ".tmp"


# --- identity ---------------------------------------------------------------------------


def fingerprint(payload: Any) -> str:
    """sha256 hex of the payload as canonical JSON (sorted keys, no whitespace)."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def spec_fingerprint(
    training_config: dict, data_versions: dict[str, str], feature_service: dict
) -> str:
    """What is trained: the training config, the data versions behind the training set, the feature service."""
    return fingerprint(
        {
            "training_config": training_config,
            "data_versions": data_versions,
            "feature_service": feature_service,
        }
    )


def exec_fingerprint(code_version: str, libraries: dict[str, str], seed: int) -> str:
    """How it is trained: the code version, the library versions, the seed."""
    return fingerprint({"code_version": code_version, "libraries": libraries, "seed": seed})


def library_versions(names: tuple[str, ...] | list[str] = DEFAULT_LIBRARIES) -> dict[str, str]:
    """Installed version of each distribution; `not-installed` when it is absent."""
    versions: dict[str, str] = {}
    for name in names:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = NOT_INSTALLED
    return versions


# --- completion contract ------------------------------------------------------------------


@dataclass(frozen=True)
class Completion:
    complete: bool
    reason: str


def _remote(path) -> bool:
    """Whether `path` is in an object store (a `UPath`), not on this disk."""
    return hasattr(path, "fs")


def _local(path) -> Path:
    """`path` as given when it is an object store's (`UPath`), else a `Path`."""
    return path if _remote(path) else Path(path)


def check_completion(path: Path) -> Completion:
    """The completion contract for one variant directory (on disk or in the store)."""
    path = _local(path)
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


def _read_json_object(file: Path) -> dict:
    try:
        value = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


# --- decisions ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunDecision:
    action: str  # "reuse" | "train" | "resume" | "continue"
    mode: str
    variant: int
    path: Path
    reason: str  # why, in words, for metadata
    previous: Path | None = None  # continue_from_previous: the run continued from

    @property
    def reused(self) -> bool:
        """True when no training happens: an existing complete result is returned."""
        return self.action == "reuse"

    def as_metadata(self) -> dict[str, Any]:
        """JSON-ready summary, for metadata.json and Dagster materialization metadata."""
        return {
            "action": self.action,
            "mode": self.mode,
            "variant": self.variant,
            "path": str(self.path),
            "reason": self.reason,
            "reused": self.reused,
            "previous": str(self.previous) if self.previous is not None else None,
        }


# --- runs of one model under one spec/exec ------------------------------------------------


class ModelRuns:
    """The variants of one model under one spec/exec fingerprint pair."""

    def __init__(self, root: Path, model: str, spec: str, exec_: str) -> None:
        if not model or model in {".", ".."} or "/" in model or os.sep in model:
            raise ValueError(f"model name {model!r} must be a plain directory name")
        for label, value in (("spec", spec), ("exec", exec_)):
            if len(value) < 8:
                raise ValueError(f"{label} fingerprint {value!r} is shorter than 8 characters")
        self.root = _local(root)
        self.model = model
        self.spec = spec
        self.exec_ = exec_

    @property
    def model_dir(self) -> Path:
        return self.root / self.model

    @property
    def base(self) -> Path:
        return self.model_dir / f"spec-{self.spec[:8]}_exec-{self.exec_[:8]}"

    def __repr__(self) -> str:
        return f"ModelRuns({str(self.base)!r})"

    # -- variants --------------------------------------------------------------------------

    def variants(self) -> list[int]:
        return _variants_in(self.base)

    def path(self, variant: int) -> Path:
        if isinstance(variant, bool) or not isinstance(variant, int) or variant < 1:
            raise ValueError(f"variant must be a positive integer, got {variant!r}")
        return self.base / f"v{variant}"

    def completion(self, variant: int) -> Completion:
        return check_completion(self.path(variant))

    def latest_complete(self) -> int | None:
        for variant in reversed(self.variants()):
            if self.completion(variant).complete:
                return variant
        return None

    def allocate(self) -> tuple[int, Path]:
        """Create the next free v<N>; `os.mkdir` is atomic, so a lost race tries N+1. In
        an object store, under the lock of this spec/exec (every machine's), the marker
        object of the next number."""
        if _remote(self.base):
            with stores.lock(self.base / ".allocate"):
                variant = max(self.variants(), default=0) + 1
                path = self.path(variant)
                stores.atomic_write(path / ALLOCATED_MARKER, lambda p: p.write_bytes(b""))
            return variant, path
        self.base.mkdir(parents=True, exist_ok=True)
        variant = max(self.variants(), default=0) + 1
        while True:
            path = self.path(variant)
            try:
                os.mkdir(path)
            except FileExistsError:
                variant += 1
                continue
            return variant, path

    # -- writing -----------------------------------------------------------------------------

    def write(
        self,
        path: Path,
        write_model: Callable[[Path], None],
        metrics: dict,
        metadata: dict,
    ) -> None:
        """Write a run's outputs atomically; metadata.json last, as the commit point.

        Files of an earlier attempt in `path` are removed first, so a failure here
        leaves the variant incomplete. `finished_at` (UTC ISO) is added to metadata
        when absent. No temp files are left behind, whatever raises.
        """
        path = _local(path)
        for label, value in (("metrics", metrics), ("metadata", metadata)):
            if not isinstance(value, dict) or not value:
                raise ValueError(f"{label} must be a non-empty dict, got {value!r}")
        metadata = dict(metadata)
        metadata.setdefault("finished_at", datetime.now(UTC).isoformat())
        metrics_text = _json_text(metrics)
        metadata_text = _json_text(metadata)

        if _remote(path):
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

    # -- modes -------------------------------------------------------------------------------

    def decide(self, mode: str) -> RunDecision:
        if mode not in MODES:
            raise ValueError(f"unknown run mode {mode!r}; valid modes: {', '.join(MODES)}")
        where = self.base.name

        if mode == "reuse_if_exists":
            latest = self.latest_complete()
            if latest is not None:
                return RunDecision(
                    "reuse", mode, latest, self.path(latest), f"{mode}: v{latest} is complete"
                )
            variant, path = self.allocate()
            return RunDecision(
                "train",
                mode,
                variant,
                path,
                f"{mode}: no complete run in {where}; training v{variant}",
            )

        if mode == "force_new":
            existing = len(self.variants())
            variant, path = self.allocate()
            return RunDecision(
                "train",
                mode,
                variant,
                path,
                f"{mode}: training new variant v{variant} ({existing} variant(s) already in {where})",
            )

        if mode == "resume_if_incomplete":
            variants = self.variants()
            if variants:
                newest = variants[-1]
                completion = self.completion(newest)
                path = self.path(newest)
                if completion.complete:
                    return RunDecision(
                        "reuse", mode, newest, path, f"{mode}: v{newest} is complete"
                    )
                _clear_dir(path)
                return RunDecision(
                    "resume",
                    mode,
                    newest,
                    path,
                    f"{mode}: v{newest} is incomplete ({completion.reason}); "
                    "partial files removed, retraining in place",
                )
            variant, path = self.allocate()
            return RunDecision(
                "train", mode, variant, path, f"{mode}: no run in {where}; training v{variant}"
            )

        # continue_from_previous
        previous = self.previous_complete()
        variant, path = self.allocate()
        if previous is None:
            return RunDecision(
                "train",
                mode,
                variant,
                path,
                f"{mode}: no complete run of {self.model} to continue from; "
                f"training v{variant} from scratch",
            )
        finished = _finished_at(previous)
        return RunDecision(
            "continue",
            mode,
            variant,
            path,
            f"{mode}: continuing from {previous.parent.name}/{previous.name} "
            f"(finished {finished.isoformat()}) into v{variant}",
            previous=previous,
        )

    def previous_complete(self) -> Path | None:
        """Newest complete run of this model under any spec/exec directory.

        Ordered by metadata.json `finished_at`, falling back to the file's mtime when
        the field is absent or not an ISO timestamp; ties go to the later path.
        """
        if not self.model_dir.is_dir():
            return None
        candidates: list[tuple[datetime, str, Path]] = []
        for run_dir in _run_dirs(self.model_dir):
            if not run_dir.name.startswith("spec-"):
                continue
            for variant in _variants_in(run_dir):
                path = run_dir / f"v{variant}"
                if check_completion(path).complete:
                    candidates.append((_finished_at(path), f"{run_dir.name}/{variant:012d}", path))
        if not candidates:
            return None
        return max(candidates)[2]


# --- helpers --------------------------------------------------------------------------------


def _variants_in(base: Path) -> list[int]:
    if _remote(base):
        entries = [(p.name, True) for p in _store_dirs(base)]
    else:
        try:
            entries = [(e.name, e.is_dir()) for e in os.scandir(base)]
        except (FileNotFoundError, NotADirectoryError):
            return []
    found = []
    for name, is_dir in entries:
        if name.startswith("v") and name[1:].isdigit() and name[1:].isascii():
            number = int(name[1:])
            if number >= 1 and name == f"v{number}" and is_dir:
                found.append(number)
    return sorted(found)


def _run_dirs(model_dir: Path) -> list[Path]:
    """The directories in a model's directory (on disk or in the store)."""
    if _remote(model_dir):
        return _store_dirs(model_dir)
    return [p for p in model_dir.iterdir() if p.is_dir()]


def _store_dirs(prefix) -> list:
    """The "directories" (common prefixes) right under `prefix` in an object store."""
    try:
        listed = prefix.fs.ls(prefix.path, detail=True, refresh=True)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [
        prefix / entry["name"].rstrip("/").rpartition("/")[2]
        for entry in listed
        if entry.get("type") == "directory"
    ]


def _finished_at(path: Path) -> datetime:
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
    if _remote(path):
        if path.fs.exists(path.path):
            path.fs.rm_file(path.path)
        return
    Path(path).unlink(missing_ok=True)


def _clear_dir(path: Path) -> None:
    """Remove everything inside `path` (a variant directory), keeping the directory (in
    an object store: its marker object)."""
    if _remote(path):
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
