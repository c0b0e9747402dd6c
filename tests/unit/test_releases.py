"""Releases and rollbacks on disk: a rollback restores the last earlier model that was
never rolled back, so a chain of rollbacks never puts a rolled-back model back; every
manifest carries its content hash, a broken one is refused naming the files, and the
repair points CURRENT at the newest intact release."""

import json
from pathlib import Path

import pytest

from e2i_platform.lib.releases import (
    CONTENT_HASH,
    REPAIR_COMMAND,
    UNVERIFIED,
    VERIFIED,
    ReleaseIntegrityError,
    check_manifest,
    current_release,
    manifest_path,
    manifest_sha256,
    read_manifest,
    verification,
)
from e2i_platform.lib.versions import sha256_file
from e2i_platform.promotion.release import new_release_id, promote, rollback, rollbacks_of
from e2i_platform.promotion.repair import repair
from e2i_platform.resources.mlflow import MlflowResource

OFF = MlflowResource(
    enabled=False, tracking_uri="sqlite:///unused.db", experiment="e", registered_model="m"
)


def _promote(home: Path, name: str, model: Path | None = None, real_sha: bool = False) -> dict:
    """A release of a model file holding `name`; its sha256 is `sha-<name>`, or the file's
    real one (`real_sha`, what a repair checks before restoring it)."""
    model = model or home / "models" / name / "model.txt"
    model.parent.mkdir(parents=True, exist_ok=True)
    model.write_text(name)
    current = current_release(home)
    sha = sha256_file(model) if real_sha else f"sha-{name}"
    manifest = {
        "release_id": new_release_id("promotion"),
        "kind": "promotion",
        "created_at": "now",
        "model": {"model_file": str(model), "model_sha256": sha, "mlflow": {}},
        "metrics": {},
        "params": {},
        "data_versions": {},
        "features": {},
        "gates": {},
        "code_version": "c",
        "previous_release": current["release_id"] if current else None,
    }
    return promote(home, OFF, manifest)


def _model(home: Path) -> str:
    return current_release(home)["model"]["model_sha256"]


def test_a_chain_of_rollbacks_never_restores_a_rolled_back_model(tmp_path):
    home = tmp_path
    for name in ("m0", "m1", "m2"):
        _promote(home, name)
    first = rollback(home, OFF, "m2 drifted")
    assert _model(home) == "sha-m1" and first["restores_release"]
    _promote(home, "m3")
    rollback(home, OFF, "m3 drifted")  # back to m1 (m2 was rolled back)
    assert _model(home) == "sha-m1"
    rollback(home, OFF, "m1 too")  # further back: m0, never forward to m2 or m3
    assert _model(home) == "sha-m0"
    assert rollbacks_of(home, "sha-m2") and rollbacks_of(home, "sha-m3")
    with pytest.raises(RuntimeError, match="has no previous release to restore"):
        rollback(home, OFF, "nothing left")
    assert _model(home) == "sha-m0"


def test_a_home_restored_elsewhere_rolls_back_to_its_own_model_file(tmp_path):
    """Manifests written before model paths were stored relative to the home name the
    model by its absolute path in the original home: in a copy at another path, the
    rollback checks and restores the copy's file, never the original's."""
    import shutil

    original = tmp_path / "original"
    for variant in ("v1", "v2"):
        model = original / "models" / "disc" / "spec-00000000_exec-00000000" / variant
        _promote(original, variant, model / "model.txt")  # an absolute path, as before
    copy = tmp_path / "restored" / "e2i"
    shutil.copytree(original, copy)
    before = current_release(copy)["release_id"]
    gone = copy / "models" / "disc" / "spec-00000000_exec-00000000" / "v1" / "model.txt"
    gone.unlink()
    with pytest.raises(RuntimeError, match=f"model file {gone} is gone"):
        rollback(copy, OFF, "the restored copy lacks v1")  # the original still has it
    assert current_release(copy)["release_id"] == before
    gone.write_text("v1")
    restored = rollback(copy, OFF, "v2 drifted")
    assert _model(copy) == "sha-v1" and restored["model"]["model_sha256"] == "sha-v1"
    assert restored["model"]["model_file"] == "models/disc/spec-00000000_exec-00000000/v1/model.txt"
    assert current_release(original)["model"]["model_sha256"] == "sha-v2"


# --- manifest integrity: content hash, CURRENT naming a broken release, repair ---------


def _tamper(home: Path, release_id: str) -> Path:
    """Change one value of a manifest, leaving its recorded hash as it was."""
    path = home / "releases" / release_id / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["code_version"] = "edited by hand"
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return path


def _releases(home: Path) -> list[str]:
    return sorted(p.name for p in (home / "releases").iterdir() if p.is_dir())


def test_a_manifest_records_its_content_hash_and_is_verified_when_read(tmp_path):
    released = _promote(tmp_path, "m0")
    path = manifest_path(tmp_path, released["release_id"])
    on_disk = json.loads(path.read_text())
    assert on_disk[CONTENT_HASH] == manifest_sha256(on_disk) == released[CONTENT_HASH]
    assert len(on_disk[CONTENT_HASH]) == 64
    current = current_release(tmp_path)
    assert current == on_disk and verification(current) == VERIFIED
    assert not list(path.parent.glob(".*"))  # written atomically: no temporary file left


def test_a_tampered_current_manifest_is_refused_by_readers_and_by_rollback(tmp_path):
    _promote(tmp_path, "m0")
    second = _promote(tmp_path, "m1")
    path = _tamper(tmp_path, second["release_id"])
    actual = manifest_sha256(json.loads(path.read_text()))
    pointer = tmp_path / "releases" / "CURRENT"
    with pytest.raises(ReleaseIntegrityError) as refused:
        current_release(tmp_path)
    message = str(refused.value)
    assert f"releases/CURRENT ({pointer}) names release {second['release_id']}" in message
    assert f"its manifest {path} does not match its content hash" in message
    assert f"expected content_sha256 {second[CONTENT_HASH]}" in message
    assert f"actual {actual}" in message and REPAIR_COMMAND in message
    before = _releases(tmp_path)
    with pytest.raises(RuntimeError, match="does not match its content hash"):
        rollback(tmp_path, OFF, "m1 drifted")
    assert _releases(tmp_path) == before
    assert pointer.read_text().strip() == second["release_id"]


def test_current_naming_a_missing_or_unreadable_manifest_names_both_files(tmp_path):
    _promote(tmp_path, "m0")
    pointer = tmp_path / "releases" / "CURRENT"
    pointer.write_text("20990101T000000000000Z-promotion\n")
    missing = manifest_path(tmp_path, "20990101T000000000000Z-promotion")
    with pytest.raises(ReleaseIntegrityError) as refused:
        current_release(tmp_path)
    assert str(refused.value).startswith(
        f"releases/CURRENT ({pointer}) names release 20990101T000000000000Z-promotion, but "
        f"its manifest {missing} is missing."
    )
    assert REPAIR_COMMAND in str(refused.value)
    missing.parent.mkdir()
    missing.write_text('{"release_id": "20990101T0')  # cut short
    with pytest.raises(ReleaseIntegrityError, match=f"its manifest {missing} is not readable JSON"):
        current_release(tmp_path)
    pointer.write_text("\n")
    with pytest.raises(ReleaseIntegrityError, match=r"does not name a release \(it holds ''\)"):
        current_release(tmp_path)
    pointer.unlink()  # releases exist: a missing CURRENT is no "no champion yet"
    with pytest.raises(ReleaseIntegrityError, match=r"CURRENT \(.*\) is missing, but 2 release"):
        current_release(tmp_path)


def test_a_manifest_written_before_hashes_is_read_and_reported_unverified(tmp_path):
    first = _promote(tmp_path, "m0")
    _promote(tmp_path, "m1")
    path = manifest_path(tmp_path, first["release_id"])
    old = json.loads(path.read_text())
    del old[CONTENT_HASH]  # as manifests were written before hashes
    path.write_text(json.dumps(old, indent=2, sort_keys=True))
    assert verification(read_manifest(tmp_path, first["release_id"])) == UNVERIFIED
    assert check_manifest(tmp_path, first["release_id"]).status == UNVERIFIED
    restored = rollback(tmp_path, OFF, "m1 drifted")  # restores the unverified release
    assert restored["restored_manifest_verification"] == UNVERIFIED
    assert verification(current_release(tmp_path)) == VERIFIED  # the rollback's own manifest


def test_repair_sets_broken_releases_aside_and_restores_the_newest_intact_one(
    tmp_path, monkeypatch
):
    from e2i_platform.ops.releases import listing

    shas = {}
    for name in ("m0", "m1", "m2"):
        released = _promote(tmp_path, name, real_sha=True)
        shas[name] = released["model"]["model_sha256"]
    broken = released["release_id"]
    _tamper(tmp_path, broken)
    lines, intact = listing(tmp_path)
    assert not intact
    assert any(
        broken in line and "BROKEN: does not match its content hash" in line for line in lines
    )
    pointer = tmp_path / "releases" / "CURRENT"
    assert lines[-1].startswith(
        f"CURRENT: BROKEN: releases/CURRENT ({pointer}) names release {broken}"
    )
    assert REPAIR_COMMAND in lines[-1]

    outcome = repair(tmp_path, OFF, "manifest edited by hand")
    release = outcome["release"]
    assert release["kind"] == "repair" and outcome["current_was"] == broken
    assert "does not match its content hash" in outcome["problem"]
    assert _model(tmp_path) == shas["m1"]  # the newest intact release
    assert current_release(tmp_path)["release_id"] == release["release_id"]
    assert release["replaced_current"]["release_id"] == broken
    assert broken not in _releases(tmp_path)
    aside = tmp_path / "releases" / outcome["set_aside"][0]["moved_to"]
    note = json.loads((aside / "set_aside.json").read_text())
    assert note["repair_release"] == release["release_id"] and (aside / "manifest.json").exists()
    assert listing(tmp_path)[1]
    rollback(tmp_path, OFF, "m1 too")  # the history before the repair still rolls back
    assert _model(tmp_path) == shas["m0"]
    # An intact CURRENT is not moved by a repair: that is a rollback.
    with pytest.raises(ReleaseIntegrityError, match="which is intact"):
        repair(tmp_path, OFF, "again", to=release["release_id"])
    assert repair(tmp_path, OFF, "again")["release"] is None


def test_repair_refuses_when_no_release_is_intact(tmp_path):
    only = _promote(tmp_path, "m0", real_sha=True)
    _tamper(tmp_path, only["release_id"])
    with pytest.raises(ReleaseIntegrityError, match="no intact release under"):
        repair(tmp_path, OFF, "nothing to restore")
    assert _releases(tmp_path) == [only["release_id"]]  # nothing moved


def test_repair_restores_the_release_asked_for_and_refuses_one_it_cannot(tmp_path):
    first = _promote(tmp_path, "m0", real_sha=True)
    _promote(tmp_path, "m1", real_sha=True)
    (tmp_path / "releases" / "CURRENT").write_text("20990101T000000000000Z-promotion\n")
    with pytest.raises(ReleaseIntegrityError, match="release nope cannot be restored"):
        repair(tmp_path, OFF, "asked for a release that is not there", to="nope")
    outcome = repair(tmp_path, OFF, "m1 is suspect", to=first["release_id"])
    assert outcome["release"]["restores_release"] == first["release_id"]
    assert outcome["set_aside"] == []  # CURRENT named no directory: nothing to move
    assert _model(tmp_path) == first["model"]["model_sha256"]
