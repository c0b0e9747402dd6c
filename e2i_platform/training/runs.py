"""Training runs of one model: where each goes, which one a run mode picks, and which
run may write it.

Layout::

    <root>/<model>/spec-<8>_exec-<8>/v<N>/    one run's files (`training.run_files`)

The first 8 hex digits of the spec and exec fingerprints (`training.fingerprints`) name
the directory; variants v1, v2, ... of one spec/exec are separate attempts. The root is
`<home>/models` on this machine's disk or, with `platform.store.url`, `<store>/models`
in the object store every machine shares (`lib.store.store_root`, a `UPath`): the same
layout on both.

Two locks per spec/exec directory (`lib.store.lock`: a flock file on disk, a PostgreSQL
advisory lock for the object store, which leaves nothing in the store):

* `.allocate`: deciding and allocating are one step. Two runs never get one number
  (in an object store, which has no atomic mkdir, the next number's marker object is
  written under it), and a resumer's check-and-clear never interleaves with another
  run's allocation.
* `.v<N>.writing`: the writer of v<N>, held from the decision that names v<N>, taken
  before `.allocate` is released, until its write finished or failed
  (`ModelRuns.decided`). A run being trained is incomplete for minutes, until its
  metadata.json; this lock tells it from one a crash left behind, whose lock its dead
  holder freed (flock: the kernel; an advisory lock: PostgreSQL, when the connection
  closes).

Lock files are dot files beside the variants, never variants; they stay (removing a
flock file races with its next holder).

Run modes (`ModelRuns.decided`):

* reuse_if_exists: reuse the newest complete variant; none, train a new one.
* force_new: always train a new variant.
* resume_if_incomplete: when the newest variant is complete, reuse it; when it is
  incomplete and no run writes it, clear it and train again in place; when another run
  writes it, train a new one; none, train a new one.
* continue_from_previous: continue from the newest complete run of the model
  under any spec/exec directory into a new variant; none, train from scratch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, get_args

from e2i_platform.lib import store as stores
from e2i_platform.settings.models import RunMode
from e2i_platform.training.run_files import (
    ALLOCATED_MARKER,
    Completion,
    as_path,
    check_completion,
    clear_run,
    finished_at,
    in_object_store,
    write_run,
)

MODES: tuple[str, ...] = get_args(RunMode)


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


class ModelRuns:
    """The variants of one model under one spec/exec fingerprint pair."""

    def __init__(self, root: Path, model: str, spec: str, exec_: str) -> None:
        if not model or model in {".", ".."} or "/" in model or os.sep in model:
            raise ValueError(f"model name {model!r} must be a plain directory name")
        for label, value in (("spec", spec), ("exec", exec_)):
            if len(value) < 8:
                raise ValueError(f"{label} fingerprint {value!r} is shorter than 8 characters")
        self.root = as_path(root)
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

    def writer_lock(self, variant: int, timeout: float = stores.LOCK_TIMEOUT_S):
        """The lock the run writing `variant` holds (module doc), for a block."""
        self.path(variant)  # a valid variant number, or ValueError
        return stores.lock(self.base / f".v{variant}.writing", timeout)

    def allocate(self) -> tuple[int, Path]:
        """Create the next free v<N>, under `.allocate`. No writer lock is taken: a run
        that trains gets its variant from `decided`."""
        with stores.lock(self.base / ".allocate"):
            return self._allocate()

    def _allocate(self) -> tuple[int, Path]:
        """`allocate` for a caller holding `.allocate` (the lock is not reentrant)."""
        if in_object_store(self.base):
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
            except FileExistsError:  # taken by a file, not a variant: step past it
                variant += 1
                continue
            return variant, path

    def write(
        self, path: Path, write_model: Callable[[Path], None], metrics: dict, metadata: dict
    ) -> None:
        """A run's outputs, metadata.json last (`run_files.write_run`), by the run that
        holds the variant's writer lock (`decided`)."""
        write_run(path, write_model, metrics, metadata)

    # -- modes -------------------------------------------------------------------------------

    @contextmanager
    def decided(self, mode: str) -> Iterator[RunDecision]:
        """The decision of run `mode`, holding the writer lock of the variant it trains,
        resumes or continues into for the block (a reuse holds none): train and write
        inside the block."""
        if mode not in MODES:
            raise ValueError(f"unknown run mode {mode!r}; valid modes: {', '.join(MODES)}")
        with ExitStack() as writing:
            with stores.lock(self.base / ".allocate"):
                decision = self._decide(mode, writing)
            yield decision

    def _new_variant(self, writing: ExitStack) -> tuple[int, Path]:
        """Allocate v<N> and take its writer lock into `writing`. Under `.allocate` no
        other run can have named v<N> yet, so the lock is not waited for."""
        variant, path = self._allocate()
        writing.enter_context(self.writer_lock(variant, timeout=0))
        return variant, path

    def _decide(self, mode: str, writing: ExitStack) -> RunDecision:
        where = self.base.name

        if mode == "reuse_if_exists":
            latest = self.latest_complete()
            if latest is not None:
                return RunDecision(
                    "reuse", mode, latest, self.path(latest), f"{mode}: v{latest} is complete"
                )
            variant, path = self._new_variant(writing)
            reason = f"{mode}: no complete run in {where}; training v{variant}"
            return RunDecision("train", mode, variant, path, reason)

        if mode == "force_new":
            existing = len(self.variants())
            variant, path = self._new_variant(writing)
            reason = (
                f"{mode}: training new variant v{variant} "
                f"({existing} variant(s) already in {where})"
            )
            return RunDecision("train", mode, variant, path, reason)

        if mode == "resume_if_incomplete":
            variants = self.variants()
            if not variants:
                variant, path = self._new_variant(writing)
                reason = f"{mode}: no run in {where}; training v{variant}"
                return RunDecision("train", mode, variant, path, reason)
            return self._resume(variants[-1], mode, writing)

        # continue_from_previous
        previous = self.previous_complete()
        variant, path = self._new_variant(writing)
        if previous is None:
            reason = (
                f"{mode}: no complete run of {self.model} to continue from; "
                f"training v{variant} from scratch"
            )
            return RunDecision("train", mode, variant, path, reason)
        reason = (
            f"{mode}: continuing from {previous.parent.name}/{previous.name} "
            f"(finished {finished_at(previous).isoformat()}) into v{variant}"
        )
        return RunDecision("continue", mode, variant, path, reason, previous=previous)

    def _resume(self, newest: int, mode: str, writing: ExitStack) -> RunDecision:
        """resume_if_incomplete with `newest` the newest variant."""
        path = self.path(newest)
        reuse = RunDecision("reuse", mode, newest, path, f"{mode}: v{newest} is complete")
        if self.completion(newest).complete:
            return reuse
        try:
            writing.enter_context(self.writer_lock(newest, timeout=0))
        except stores.LockTimeout:
            variant, new_path = self._new_variant(writing)
            reason = f"{mode}: v{newest} is being written by another run; training v{variant}"
            return RunDecision("train", mode, variant, new_path, reason)
        # Its writer may have committed and let go between the check and the lock.
        completion = self.completion(newest)
        if completion.complete:
            writing.close()
            return reuse
        clear_run(path)
        return RunDecision(
            "resume",
            mode,
            newest,
            path,
            f"{mode}: v{newest} is incomplete ({completion.reason}); "
            "partial files removed, retraining in place",
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
                    candidates.append((finished_at(path), f"{run_dir.name}/{variant:012d}", path))
        if not candidates:
            return None
        return max(candidates)[2]


def _variants_in(base: Path) -> list[int]:
    """The variant numbers in `base`: directories named exactly v<N>, N >= 1 (lock files
    and markers start with a dot)."""
    if in_object_store(base):
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
    if in_object_store(model_dir):
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
