"""Releases: which model is the champion, since when, and on what evidence.

Each release is `$E2I_HOME/releases/<release_id>/manifest.json`, written once and
never changed; `$E2I_HOME/releases/CURRENT` names the current one and is replaced
atomically, after the manifest exists. The MLflow alias `champion` follows
CURRENT. A rollback is itself a release (kind "rollback") that points the alias
and CURRENT back at the model of the release before the current one.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from e2i_platform.resources.publication import atomic_write_json, file_lock

CHAMPION_ALIAS = "champion"


def releases_dir(home: Path) -> Path:
    return Path(home) / "releases"


def manifest_path(home: Path, release_id: str) -> Path:
    return releases_dir(home) / release_id / "manifest.json"


def read_manifest(home: Path, release_id: str) -> dict:
    path = manifest_path(home, release_id)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RuntimeError(f"release {release_id}: unreadable manifest {path}: {exc}") from exc


def current_release(home: Path) -> dict | None:
    pointer = releases_dir(home) / "CURRENT"
    if not pointer.exists():
        return None
    return read_manifest(home, pointer.read_text().strip())


def all_releases(home: Path) -> list[dict]:
    """Every release manifest, oldest first (release ids sort by time)."""
    root = releases_dir(home)
    if not root.exists():
        return []
    ids = sorted(p.name for p in root.iterdir() if (p / "manifest.json").exists())
    return [read_manifest(home, i) for i in ids]


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
    """Write the manifest (new directory, atomic file), then move CURRENT to it."""
    root = releases_dir(home)
    directory = root / manifest["release_id"]
    directory.mkdir(parents=True, exist_ok=False)
    path = directory / "manifest.json"
    atomic_write_json(manifest, path)
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
