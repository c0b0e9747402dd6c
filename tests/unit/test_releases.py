"""Releases and rollbacks on disk: a rollback restores the last earlier model that was
never rolled back, so a chain of rollbacks never puts a rolled-back model back."""

from pathlib import Path

import pytest

from e2i_platform.promotion.release import (
    current_release,
    new_release_id,
    promote,
    rollback,
    rollbacks_of,
)
from e2i_platform.resources.mlflow import MlflowResource

OFF = MlflowResource(
    enabled=False, tracking_uri="sqlite:///unused.db", experiment="e", registered_model="m"
)


def _promote(home: Path, name: str, model: Path | None = None) -> dict:
    model = model or home / "models" / name / "model.txt"
    model.parent.mkdir(parents=True, exist_ok=True)
    model.write_text(name)
    current = current_release(home)
    manifest = {
        "release_id": new_release_id("promotion"),
        "kind": "promotion",
        "created_at": "now",
        "model": {"model_file": str(model), "model_sha256": f"sha-{name}", "mlflow": {}},
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
