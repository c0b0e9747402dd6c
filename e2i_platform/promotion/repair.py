"""Repairing releases: recovery from a `releases/CURRENT` that names a missing or broken
manifest (`make releases REPAIR="why"`). Broken releases are set aside with a note; the
newest intact release's model becomes champion again through a release of kind
"repair", published and aliased as a rollback is (`promotion.release`).

The releases are in the home or in the object store every machine shares
(`lib.releases.release_store`); the repair runs under the releases lock either way
(across machines for an object store). Setting a release aside moves its directory:
a rename on disk, a copy of every object of its prefix then their deletion in an
object store (the copy is under `.set_aside/`, which no reader takes for a release)."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from e2i_platform.lib.releases import (
    ManifestCheck,
    ReleaseIntegrityError,
    check_manifest,
    current_pointer,
    current_release_id,
    release_ids,
    releases_dir,
    verification,
)
from e2i_platform.lib.store import is_remote
from e2i_platform.promotion.release import (
    home_of,
    move_alias,
    new_release_id,
    publish_moved,
    release_lock,
    requested_by,
    rollbacks_by_model,
)
from e2i_platform.resources.publication import atomic_write_json

if TYPE_CHECKING:
    from upath import UPath

SET_ASIDE = ".set_aside"


def repair(
    store: Path | UPath,
    mlflow,
    reason: str,
    to: str | None = None,
    run_id: str | None = None,
    *,
    home: Path | UPath | str | None = None,
) -> dict:
    """Recover from broken manifests, under the releases lock: every release whose manifest
    is broken (missing, not JSON, failing its hash) is moved to `releases/.set_aside/`
    with a note saying why, and -- when CURRENT names a broken release, or cannot be read
    -- a new release of kind "repair" makes the model of the newest intact release
    champion again (or of release `to`), as a rollback does. Returns what was done:
    `release` (the repair manifest, or None when CURRENT was intact), `set_aside`,
    `current_was` and its `problem`. `store`: where the releases are
    (`lib.releases.release_store`); `home`: the models' store whose model files they
    name (`training.model_run.model_store`; by default the store, when it is a home on
    this disk)."""
    home = home_of(store, home)
    with release_lock(store):
        return _repair(store, home, mlflow, reason, to, run_id)


def repair_candidates(home: Path | UPath, checks: list[ManifestCheck]) -> list[ManifestCheck]:
    """Intact releases whose model file is present and unchanged (in the models' store
    `home`) and whose model no intact rollback took out of service, newest first: what a
    repair may point CURRENT at."""
    from e2i_platform.training.model_run import model_file_mismatch, model_path

    intact = {c.release_id: c.manifest for c in checks if c.problem is None}
    rolled_back = rollbacks_by_model(intact)
    out = []
    for check in reversed(checks):
        model = (check.manifest or {}).get("model", {})
        if check.problem is not None or model.get("model_sha256") in rolled_back:
            continue
        try:
            path = model_path(home, model, f"release {check.release_id}")
        except (KeyError, ValueError):
            continue
        if model_file_mismatch(path, model["model_sha256"]) is None:
            out.append(check)
    return out


def _repair(
    store: Path | UPath,
    home: Path | UPath,
    mlflow,
    reason: str,
    to: str | None,
    run_id: str | None = None,
) -> dict:
    from e2i_platform.lib.home_paths import stored
    from e2i_platform.training.model_run import model_path

    root = releases_dir(store)
    checks = [check_manifest(store, i) for i in release_ids(store)]
    broken = [c for c in checks if c.problem is not None]
    try:
        current_id, current_problem = current_release_id(store), None
    except ReleaseIntegrityError as exc:
        current_id, current_problem = None, str(exc)
    if current_id is not None:
        current_check = next((c for c in checks if c.release_id == current_id), None)
        current_check = current_check or check_manifest(store, current_id)
        current_problem = current_check.problem and f"manifest {current_check.path} " + (
            current_check.problem
        )
    stamp = datetime.now(UTC)
    outcome: dict = {
        "release": None,
        "current_was": current_id,
        "problem": current_problem,
        "set_aside": [
            {
                "release_id": c.release_id,
                "problem": c.problem,
                "moved_to": str(Path(SET_ASIDE) / f"{c.release_id}.{stamp:%Y%m%dT%H%M%S%fZ}"),
            }
            for c in broken
        ],
    }
    if current_problem is None and to is not None:
        raise ReleaseIntegrityError(
            f"repair: releases/CURRENT ({current_pointer(store)}) names release {current_id}, "
            "which is intact; to restore an earlier model use `make rollback REASON=...`; "
            "nothing was changed"
        )
    if current_problem is not None:
        candidates = repair_candidates(home, checks)
        if to is not None:
            chosen = [c for c in candidates if c.release_id == to]
            if not chosen:
                why = next((c.status for c in checks if c.release_id == to), "does not exist")
                raise ReleaseIntegrityError(
                    f"repair: release {to} cannot be restored ({why}; or its model file is "
                    "missing or changed, or its model was rolled back); intact candidates: "
                    f"{', '.join(c.release_id for c in candidates) or 'none'}; nothing was "
                    "changed"
                )
            candidates = chosen
        if not candidates:
            raise ReleaseIntegrityError(
                f"repair: no intact release under {root} to point CURRENT at (every manifest "
                "is broken, or its model file is missing or changed, or its model was rolled "
                "back); restore releases/ from a backup or promote a model with make run; "
                "nothing was changed"
            )
        target = candidates[0].manifest
        model_file = model_path(home, target["model"], f"release {target['release_id']}")
        version = target["model"].get("mlflow", {}).get("model_version")
        release_id = new_release_id("repair")
        manifest = {
            **{k: target[k] for k in ("metrics", "params", "data_versions", "features")},
            "model": {**target["model"], "model_file": stored(home, model_file)},
            "release_id": release_id,
            "kind": "repair",
            "created_at": stamp.isoformat(),
            "reason": reason,
            "requested_by": requested_by(run_id),
            "restores_release": target["release_id"],
            "restored_manifest_verification": verification(target),
            "replaced_current": {"release_id": current_id, "problem": current_problem},
            "set_aside": outcome["set_aside"],
            # The broken release is no history to walk back through: a later rollback
            # starts from the restored release.
            "previous_release": target["release_id"],
            "gates": target["gates"],
            "code_version": target["code_version"],
            "mlflow_alias": move_alias(mlflow, version, release_id, run_id),
        }
        publish_moved(store, mlflow, manifest)
        outcome["release"] = manifest
    for entry, check in zip(outcome["set_aside"], broken, strict=True):
        _set_aside(root, check, entry, reason, outcome["release"])
    return outcome


def _set_aside(root: Path | UPath, check: ManifestCheck, entry: dict, reason: str, release) -> None:
    """Move a broken release's directory out of the releases (kept for inspection), with a
    note of why, when, and which repair release replaced it."""
    destination = root / entry["moved_to"]
    if is_remote(root):
        _move_prefix(root / check.release_id, destination)
    else:
        destination.parent.mkdir(parents=True, exist_ok=True)
        os.replace(root / check.release_id, destination)
    note = {
        **entry,
        "manifest": str(check.path),
        "reason": reason,
        "set_aside_at": datetime.now(UTC).isoformat(),
        "repair_release": release["release_id"] if release else None,
    }
    atomic_write_json(note, destination / "set_aside.json")


def _move_prefix(source: UPath, destination: UPath) -> None:
    """Every object under `source/` copied (server side) to the same key under
    `destination/`, then deleted: an object store's move of a directory. Copies first,
    so a failure half way leaves every object at least where it was."""
    fs, prefix = source.fs, source.path.rstrip("/") + "/"
    keys = fs.find(prefix)
    for key in keys:
        fs.copy(key, f"{destination.path.rstrip('/')}/{key[len(prefix) :]}")
    for key in keys:
        fs.rm_file(key)
