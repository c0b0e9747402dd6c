"""Releases: which model is the champion, since when, and on what evidence.

Each release is `$E2I_HOME/releases/<release_id>/manifest.json`, written once and
never changed; `$E2I_HOME/releases/CURRENT` names the current one and is replaced
atomically, after the manifest exists. The MLflow alias `champion` follows
CURRENT. A rollback is itself a release (kind "rollback") that points the alias
and CURRENT back at the model of the release before the current one.

Reading and verifying releases is `lib.releases`; this module writes them.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from e2i_platform.lib.releases import (
    CONTENT_HASH,
    ManifestCheck,
    ReleaseIntegrityError,
    all_releases,
    check_manifest,
    current_pointer,
    current_release,
    current_release_id,
    manifest_sha256,
    read_manifest,
    release_ids,
    releases_dir,
    verification,
)
from e2i_platform.resources.publication import atomic_write_json, file_lock

CHAMPION_ALIAS = "champion"


def _rollbacks_by_model(releases: dict[str, dict]) -> dict[str, list[dict]]:
    """model sha256 -> the rollbacks that took it out of service, oldest first."""
    out: dict[str, list[dict]] = {}
    for r in releases.values():
        if r.get("kind") == "rollback":
            removed = releases.get(r["rolled_back_release"], {}).get("model", {})
            out.setdefault(removed.get("model_sha256"), []).append(r)
    return out


def rollbacks_of(home: Path, model_sha256: str) -> list[dict]:
    """The rollbacks that took this model out of service, oldest first."""
    releases = {r["release_id"]: r for r in all_releases(home)}
    return _rollbacks_by_model(releases).get(model_sha256, [])


def new_release_id(kind: str) -> str:
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-{kind}"


def publish(home: Path, manifest: dict) -> Path:
    """Write the manifest with its content hash (new directory, atomic file), then move
    CURRENT to it. `manifest` gains its `content_sha256`."""
    root = releases_dir(home)
    directory = root / manifest["release_id"]
    directory.mkdir(parents=True, exist_ok=False)
    path = directory / "manifest.json"
    # The content as readers will see it (JSON types), hashed; then written atomically.
    content = json.loads(
        json.dumps({k: v for k, v in manifest.items() if k != CONTENT_HASH}, default=str)
    )
    manifest[CONTENT_HASH] = manifest_sha256(content)
    atomic_write_json({**content, CONTENT_HASH: manifest[CONTENT_HASH]}, path)
    fd, tmp = tempfile.mkstemp(prefix=".CURRENT.", dir=root)
    with os.fdopen(fd, "w") as f:
        f.write(manifest["release_id"] + "\n")
    os.replace(tmp, root / "CURRENT")
    return path


def release_lock(home: Path):
    """One writer of releases and CURRENT at a time (promotion, rollback)."""
    return file_lock(releases_dir(home) / ".lock")


def rollback_target(home: Path, current: dict) -> dict:
    """The release to restore: walking back through the releases that were in service
    before the current one, the first whose model is another one and was never rolled
    back (a rollback of a rollback goes further back, never forward again)."""
    releases = {r["release_id"]: r for r in all_releases(home)}
    rolled_back = _rollbacks_by_model(releases)
    current_model = current["model"]["model_sha256"]
    seen = {current["release_id"]}
    candidate = current.get("previous_release")
    while candidate and candidate not in seen:
        seen.add(candidate)
        release = releases.get(candidate) or read_manifest(home, candidate)
        model = release["model"]["model_sha256"]
        if model != current_model and model not in rolled_back:
            return release
        candidate = release.get("previous_release")
    raise RuntimeError(
        f"rollback: release {current['release_id']} has no previous release to restore "
        "(every earlier model is the current one or was rolled back)"
    )


def rollback(home: Path, mlflow, reason: str) -> dict:
    """Make the model of the last release before the current one champion again (one
    that was never rolled back); under the releases lock."""
    with release_lock(home):
        return _rollback(home, mlflow, reason)


def _rollback(home: Path, mlflow, reason: str) -> dict:
    from e2i_platform.lib.home_paths import stored
    from e2i_platform.training.model_run import model_path

    current = current_release(home)
    if current is None:
        raise RuntimeError(f"rollback: no current release under {releases_dir(home)}")
    target = rollback_target(home, current)
    previous_id = target["release_id"]
    try:
        model_file = model_path(home, target["model"], f"release {previous_id}")
    except ValueError as exc:
        raise RuntimeError(f"rollback: {exc}; nothing was changed") from None
    if not model_file.exists():
        raise RuntimeError(
            f"rollback: release {previous_id}'s model file {model_file} is gone; "
            "nothing was changed"
        )
    version = target["model"].get("mlflow", {}).get("model_version")
    alias = _move_alias(mlflow, version)
    manifest = {
        **{k: target[k] for k in ("metrics", "params", "data_versions", "features")},
        # The restored model's file as this home names it now (a manifest from before may
        # hold an absolute path in another home).
        "model": {**target["model"], "model_file": stored(home, model_file)},
        "release_id": new_release_id("rollback"),
        "kind": "rollback",
        "created_at": datetime.now(UTC).isoformat(),
        "reason": reason,
        "restores_release": previous_id,
        "restored_manifest_verification": verification(target),
        "rolled_back_release": current["release_id"],
        "previous_release": current["release_id"],
        "gates": target["gates"],
        "code_version": target["code_version"],
        "mlflow_alias": alias,
    }
    publish(home, manifest)
    return manifest


def _move_alias(mlflow, version: str | None) -> dict:
    if not mlflow.enabled:
        return {"tracking": "off", "moved": False}
    if version is None:
        raise RuntimeError(
            "the release's model was trained with tracking off: it has no MLflow model "
            "version for the champion alias"
        )
    before = mlflow.alias_version(CHAMPION_ALIAS)
    mlflow.set_alias(CHAMPION_ALIAS, version)
    return {
        "tracking": "on",
        "moved": True,
        "alias": CHAMPION_ALIAS,
        "registered_model": mlflow.registered_model,
        "from_version": before,
        "to_version": version,
    }


def promote(home: Path, mlflow, manifest: dict) -> dict:
    """Move the alias to the manifest's model, then publish the manifest."""
    version = manifest["model"].get("mlflow", {}).get("model_version")
    manifest["mlflow_alias"] = _move_alias(mlflow, version)
    publish(home, manifest)
    return manifest


SET_ASIDE = ".set_aside"


def repair(home: Path, mlflow, reason: str, to: str | None = None) -> dict:
    """Recover from broken manifests, under the releases lock: every release whose manifest
    is broken (missing, not JSON, failing its hash) is moved to `releases/.set_aside/`
    with a note saying why, and -- when CURRENT names a broken release, or cannot be read
    -- a new release of kind "repair" makes the model of the newest intact release
    champion again (or of release `to`), as a rollback does. Returns what was done:
    `release` (the repair manifest, or None when CURRENT was intact), `set_aside`,
    `current_was` and its `problem`."""
    with release_lock(home):
        return _repair(home, mlflow, reason, to)


def repair_candidates(home: Path, checks: list[ManifestCheck]) -> list[ManifestCheck]:
    """Intact releases whose model file is present and unchanged and whose model no intact
    rollback took out of service, newest first: what a repair may point CURRENT at."""
    from e2i_platform.lib.versions import file_mismatch
    from e2i_platform.training.model_run import model_path

    intact = {c.release_id: c.manifest for c in checks if c.problem is None}
    rolled_back = _rollbacks_by_model(intact)
    out = []
    for check in reversed(checks):
        model = (check.manifest or {}).get("model", {})
        if check.problem is not None or model.get("model_sha256") in rolled_back:
            continue
        try:
            path = model_path(home, model, f"release {check.release_id}")
        except (KeyError, ValueError):
            continue
        if file_mismatch(path, model["model_sha256"]) is None:
            out.append(check)
    return out


def _repair(home: Path, mlflow, reason: str, to: str | None) -> dict:
    from e2i_platform.lib.home_paths import stored
    from e2i_platform.training.model_run import model_path

    root = releases_dir(home)
    checks = [check_manifest(home, i) for i in release_ids(home)]
    broken = [c for c in checks if c.problem is not None]
    try:
        current_id, current_problem = current_release_id(home), None
    except ReleaseIntegrityError as exc:
        current_id, current_problem = None, str(exc)
    if current_id is not None:
        current_check = next((c for c in checks if c.release_id == current_id), None)
        current_check = current_check or check_manifest(home, current_id)
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
            f"repair: releases/CURRENT ({current_pointer(home)}) names release {current_id}, "
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
        manifest = {
            **{k: target[k] for k in ("metrics", "params", "data_versions", "features")},
            "model": {**target["model"], "model_file": stored(home, model_file)},
            "release_id": new_release_id("repair"),
            "kind": "repair",
            "created_at": stamp.isoformat(),
            "reason": reason,
            "restores_release": target["release_id"],
            "restored_manifest_verification": verification(target),
            "replaced_current": {"release_id": current_id, "problem": current_problem},
            "set_aside": outcome["set_aside"],
            # The broken release is no history to walk back through: a later rollback
            # starts from the restored release.
            "previous_release": target["release_id"],
            "gates": target["gates"],
            "code_version": target["code_version"],
            "mlflow_alias": _move_alias(mlflow, version),
        }
        publish(home, manifest)
        outcome["release"] = manifest
    for entry, check in zip(outcome["set_aside"], broken, strict=True):
        _set_aside(root, check, entry, reason, outcome["release"])
    return outcome


def _set_aside(root: Path, check: ManifestCheck, entry: dict, reason: str, release) -> None:
    """Move a broken release's directory out of the releases (kept for inspection), with a
    note of why, when, and which repair release replaced it."""
    destination = root / entry["moved_to"]
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
