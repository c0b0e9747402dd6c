"""Releases: which model is the champion, since when, and on what evidence.

Each release is `<store>/releases/<release_id>/manifest.json`, written once and
never changed; `<store>/releases/CURRENT` names the current one and is replaced
atomically, after the manifest exists. The MLflow alias `champion` follows
CURRENT. A rollback is itself a release (kind "rollback") that points the alias
and CURRENT back at the model of the release before the current one.

`<store>` is the home on this machine's disk or the object store every machine shares
(`lib.releases.release_store`). Every file is written whole (`lib.store.atomic_write`:
on an object store one PUT), and releases and CURRENT have one writer at a time
(`release_lock`: a lock file on disk, a PostgreSQL advisory lock for an object store,
so two machines cannot release at once). Manifests name model files relative to the
models' store (`training.model_run.model_store`: the home, or the same object store;
`lib.home_paths`): a rollback takes the releases' store and, as `home=`, the models'.

Reading and verifying releases is `lib.releases`; this module writes them.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from e2i_platform.lib import store as stores
from e2i_platform.lib.releases import (
    CONTENT_HASH,
    REPORT,
    REPORT_FILE,
    all_releases,
    current_release,
    manifest_sha256,
    read_manifest,
    releases_dir,
    verification,
)
from e2i_platform.resources.publication import atomic_write, atomic_write_json

if TYPE_CHECKING:
    from upath import UPath

CHAMPION_ALIAS = "champion"


def rollbacks_by_model(releases: dict[str, dict]) -> dict[str, list[dict]]:
    """model sha256 -> the rollbacks that took it out of service, oldest first."""
    out: dict[str, list[dict]] = {}
    for r in releases.values():
        if r.get("kind") == "rollback":
            removed = releases.get(r["rolled_back_release"], {}).get("model", {})
            out.setdefault(removed.get("model_sha256"), []).append(r)
    return out


def rollbacks_of(store: Path | UPath, model_sha256: str) -> list[dict]:
    """The rollbacks that took this model out of service, oldest first."""
    releases = {r["release_id"]: r for r in all_releases(store)}
    return rollbacks_by_model(releases).get(model_sha256, [])


def new_release_id(kind: str) -> str:
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-{kind}"


def home_of(store: Path | UPath, home: Path | UPath | str | None) -> Path | UPath:
    """The models' store whose model files the releases in `store` name: `home` (a home
    on this disk, or an object store's root), or the store itself when it is a home on
    this disk."""
    if home is not None:
        return home if hasattr(home, "fs") else Path(home)
    if stores.is_remote(store):
        raise ValueError(
            f"the releases are in the object store {store}: name the models' store whose "
            "model files they name (home=..., `training.model_run.model_store(settings)`)"
        )
    return Path(store)


def publish(store: Path | UPath, manifest: dict) -> Path | UPath:
    """Write the release report and the manifest with its content hash (new directory,
    atomic files), then move CURRENT to it. `manifest` gains its `content_sha256` and its
    `report` (file name and sha256)."""
    from e2i_platform.promotion.release_report import release_report

    root = releases_dir(store)
    directory = root / manifest["release_id"]
    # The content as readers will see it (JSON types), hashed; then written atomically.
    content = json.loads(
        json.dumps(
            {k: v for k, v in manifest.items() if k not in (CONTENT_HASH, REPORT)}, default=str
        )
    )
    # The report is rendered before anything is written and written before the manifest
    # and before CURRENT moves: a report that cannot be made fails the release before it
    # is published (CURRENT unchanged; at worst a directory without manifest, which
    # readers treat as broken, never as a release). The manifest records the report's
    # sha256, so its content hash covers the report too.
    report = release_report(store, content).encode()
    content[REPORT] = {"file": REPORT_FILE, "sha256": hashlib.sha256(report).hexdigest()}
    manifest[REPORT] = content[REPORT]
    manifest[CONTENT_HASH] = manifest_sha256(content)
    if stores.is_remote(directory):
        # No directories in an object store: a release id already used has objects.
        if directory.exists():
            raise FileExistsError(f"release directory {directory} already exists")
    else:
        directory.mkdir(parents=True, exist_ok=False)
    path = directory / "manifest.json"
    atomic_write(directory / REPORT_FILE, lambda p: p.write_bytes(report))
    atomic_write_json({**content, CONTENT_HASH: manifest[CONTENT_HASH]}, path)
    release_id = manifest["release_id"]
    atomic_write(root / "CURRENT", lambda p: p.write_text(release_id + "\n"))
    return path


def release_lock(store: Path | UPath, timeout: float = stores.LOCK_TIMEOUT_S):
    """One writer of releases and CURRENT at a time (promotion, rollback, repair): on
    every machine that shares the store (`lib.store.lock`); waiting longer than
    `timeout` seconds raises `lib.store.LockTimeout` naming the lock."""
    return stores.lock(releases_dir(store) / ".lock", timeout)


def rollback_target(store: Path | UPath, current: dict) -> dict:
    """The release to restore: walking back through the releases that were in service
    before the current one, the first whose model is another one and was never rolled
    back (a rollback of a rollback goes further back, never forward again)."""
    releases = {r["release_id"]: r for r in all_releases(store)}
    rolled_back = rollbacks_by_model(releases)
    current_model = current["model"]["model_sha256"]
    seen = {current["release_id"]}
    candidate = current.get("previous_release")
    while candidate and candidate not in seen:
        seen.add(candidate)
        release = releases.get(candidate) or read_manifest(store, candidate)
        model = release["model"]["model_sha256"]
        if model != current_model and model not in rolled_back:
            return release
        candidate = release.get("previous_release")
    raise RuntimeError(
        f"rollback: release {current['release_id']} has no previous release to restore "
        "(every earlier model is the current one or was rolled back)"
    )


def rollback(
    store: Path | UPath,
    mlflow,
    reason: str,
    run_id: str | None = None,
    *,
    home: Path | UPath | str | None = None,
) -> dict:
    """Make the model of the last release before the current one champion again (one
    that was never rolled back); under the releases lock. `store`: where the releases
    are (`lib.releases.release_store`); `home`: the models' store whose model files they
    name (`training.model_run.model_store`; by default the store, when it is a home on
    this disk). `run_id`: the Dagster run that asked for
    it (recorded in the manifest and its report)."""
    home = home_of(store, home)
    with release_lock(store):
        return _rollback(store, home, mlflow, reason, run_id)


def requested_by(run_id: str | None) -> dict:
    """Who asked for a rollback or repair, as far as the process can tell."""
    import getpass

    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry (some containers)
        user = None
    return {"dagster_run_id": run_id, "os_user": user}


def _rollback(
    store: Path | UPath, home: Path | UPath, mlflow, reason: str, run_id: str | None = None
) -> dict:
    from e2i_platform.lib.home_paths import stored
    from e2i_platform.training.model_run import model_path

    current = current_release(store)
    if current is None:
        raise RuntimeError(f"rollback: no current release under {releases_dir(store)}")
    target = rollback_target(store, current)
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
    release_id = new_release_id("rollback")
    alias = move_alias(mlflow, version, release_id, run_id)
    manifest = {
        **{k: target[k] for k in ("metrics", "params", "data_versions", "features")},
        # The restored model's file as the models' store names it now (a manifest from
        # before may hold an absolute path in another home).
        "model": {**target["model"], "model_file": stored(home, model_file)},
        "release_id": release_id,
        "kind": "rollback",
        "created_at": datetime.now(UTC).isoformat(),
        "reason": reason,
        "requested_by": requested_by(run_id),
        "restores_release": previous_id,
        "restored_manifest_verification": verification(target),
        "rolled_back_release": current["release_id"],
        "previous_release": current["release_id"],
        "gates": target["gates"],
        "code_version": target["code_version"],
        "mlflow_alias": alias,
    }
    publish_moved(store, mlflow, manifest)
    return manifest


def move_alias(
    mlflow, version: str | None, release_id: str, run_id: str | None, gates: dict | None = None
) -> dict:
    """`champion` to the release's model version (`MlflowResource.move_champion`): the
    version is tagged with the release, the Dagster run that made it and, for a
    promotion, each promotion gate's verdict (`e2i.gate.<check>`); `challenger` is
    removed when it named that version."""
    from e2i_platform.resources.mlflow_registry import (
        RELEASE_KIND_TAG,
        RELEASE_RUN_TAG,
        RELEASE_TAG,
        gate_tag,
    )

    if not mlflow.enabled:
        return {"tracking": "off", "moved": False}
    if version is None:
        raise RuntimeError(
            "the release's model was trained with tracking off: it has no MLflow model "
            "version for the champion alias"
        )
    tags = {RELEASE_TAG: release_id, RELEASE_KIND_TAG: release_id.rpartition("-")[2]}
    if run_id := run_id or mlflow.dagster_run_id:
        tags[RELEASE_RUN_TAG] = run_id
    for key, entry in (gates or {}).items():
        asset, _, check = key.rpartition(".")
        if asset == "model_evaluation":  # the promotion gates: verdicts on this model
            tags.update([gate_tag(check, entry.get("passed"), entry.get("summary"))])
    moved = mlflow.move_champion(str(version), tags)
    return {
        "tracking": "on",
        "moved": True,
        "alias": CHAMPION_ALIAS,
        "registered_model": mlflow.registered_model,
        "from_version": moved["from_version"],
        "to_version": version,
        "challenger": moved["challenger"],
        "challenger_removed": moved["challenger_removed"],
    }


def publish_moved(store: Path | UPath, mlflow, manifest: dict) -> None:
    """`publish` a release whose `move_alias` already ran: if publishing fails (the report,
    the disk), the aliases go back where they were, so the registry never names a
    champion that releases/CURRENT does not; the error is raised either way, and names
    both states when putting the aliases back failed too."""
    try:
        publish(store, manifest)
    except Exception as exc:
        alias = manifest.get("mlflow_alias") or {}
        if not alias.get("moved"):
            raise
        try:
            mlflow.undo_champion(alias, manifest["release_id"])
        except Exception as undo:
            raise RuntimeError(
                f"release {manifest['release_id']} was not published ({type(exc).__name__}: "
                f"{exc}), and moving the MLflow alias champion back to version "
                f"{alias.get('from_version')} failed too ({type(undo).__name__}: {undo}): the "
                f"registry names version {alias.get('to_version')} as champion while "
                "releases/CURRENT names the release before; set the alias back to the "
                "version CURRENT's manifest names (`make releases` shows it)"
            ) from exc
        raise


def promote(store: Path | UPath, mlflow, manifest: dict) -> dict:
    """Move the alias to the manifest's model, then publish the manifest (the alias goes
    back if publishing fails: `publish_moved`)."""
    version = manifest["model"].get("mlflow", {}).get("model_version")
    manifest["mlflow_alias"] = move_alias(
        mlflow, version, manifest["release_id"], manifest.get("dagster_run_id"), manifest["gates"]
    )
    publish_moved(store, mlflow, manifest)
    return manifest
