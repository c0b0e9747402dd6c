"""Releases, releases/CURRENT and landing files in an S3-compatible object store (a real
moto server process) with the releases lock in PostgreSQL: manifests and CURRENT are
written whole to the bucket and read back the same by boto3 and by the platform's
readers, a manifest changed in the bucket is refused naming CURRENT and the manifest,
the repair sets the broken release aside in the bucket, two processes releasing at once
take turns, and landing files are read from the bucket. Nothing of it is written under
the home: only the model files the manifests name live there (models move separately).
"""

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from s3_fixtures import ObjectStore

from e2i_platform.lib import store
from e2i_platform.lib.releases import (
    CONTENT_HASH,
    REPAIR_COMMAND,
    VERIFIED,
    ReleaseIntegrityError,
    check_manifest,
    current_release,
    manifest_sha256,
    release_ids,
    release_store,
    verification,
)
from e2i_platform.lib.versions import sha256_file
from e2i_platform.promotion.release import new_release_id, promote, release_lock, rollback
from e2i_platform.promotion.repair import repair
from e2i_platform.resources.mlflow import MlflowResource
from e2i_platform.settings import load_settings

pytest_plugins = ["s3_fixtures"]  # object_store, s3_endpoint

OFF = MlflowResource(
    enabled=False, tracking_uri="sqlite:///unused.db", experiment="e", registered_model="m"
)


def _files_under(root: Path) -> list[str]:
    return sorted(str(Path(d, f).relative_to(root)) for d, _, fs in os.walk(root) for f in fs)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _model(home: Path, name: str) -> dict:
    """A model file of the home (as training leaves one) and the manifest entry naming it:
    relative to the home, with its real sha256 (what a repair checks before restoring)."""
    path = home / "models" / name / "model.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(name)
    return {"model_file": f"models/{name}/model.txt", "model_sha256": sha256_file(path)}


def _release(releases, model: dict) -> dict:
    """A promotion manifest of `model` after the current release of `releases`."""
    current = current_release(releases)
    return {
        "release_id": new_release_id("promotion"),
        "kind": "promotion",
        "created_at": "now",
        "model": {**model, "mlflow": {}},
        "metrics": {},
        "params": {},
        "data_versions": {},
        "features": {},
        "gates": {},
        "code_version": "c",
        "previous_release": current["release_id"] if current else None,
    }


@pytest.fixture
def shared(object_store: ObjectStore, e2i_home: Path, monkeypatch):
    """The platform's settings with `platform.store.url` on the bucket (E2I_STORE_URL, as
    a deployment sets it) and an empty home."""
    monkeypatch.setenv("E2I_STORE_URL", object_store.url)
    settings = load_settings()
    assert settings.platform.store.url == object_store.url
    assert _files_under(e2i_home) == []
    return settings


# --- releases and CURRENT in the bucket ---------------------------------------------


def test_releases_current_integrity_and_repair_in_the_object_store(
    object_store: ObjectStore, shared, e2i_home: Path
):
    from e2i_platform.ops.releases import listing

    releases = release_store(shared)
    assert str(releases) == object_store.url
    models = {name: _model(e2i_home, name) for name in ("m0", "m1")}
    first = promote(releases, OFF, _release(releases, models["m0"]))
    second = promote(releases, OFF, _release(releases, models["m1"]))
    r1, r2 = first["release_id"], second["release_id"]

    # Written to the bucket, whole: the two releases' manifest and report, and CURRENT.
    keys = object_store.object_keys()
    assert keys == sorted(
        [f"prefix/releases/{r}/{f}" for r in (r1, r2) for f in ("manifest.json", "report.html")]
        + ["prefix/releases/CURRENT"]
    )
    # Read by the library's own reader (boto3): CURRENT names the second release, each
    # manifest holds its content hash, and the report it names is the bytes stored.
    assert object_store.get("prefix/releases/CURRENT") == f"{r2}\n".encode()
    for released in (first, second):
        key = f"prefix/releases/{released['release_id']}"
        stored = json.loads(object_store.get(f"{key}/manifest.json"))
        assert stored[CONTENT_HASH] == manifest_sha256(stored) == released[CONTENT_HASH]
        assert stored["report"]["sha256"] == _sha256(object_store.get(f"{key}/report.html"))
        assert check_manifest(releases, released["release_id"]).manifest == stored
    assert second["previous_release"] == r1
    # ... and by the platform's readers, naming the bucket's URLs.
    current = current_release(releases)
    assert current == json.loads(object_store.get(f"prefix/releases/{r2}/manifest.json"))
    assert verification(current) == VERIFIED
    assert release_ids(releases) == [r1, r2]
    lines, intact = listing(releases)
    assert intact and lines[0] == f"Releases under {object_store.url}/releases (oldest first):"
    assert lines[-1] == f"CURRENT: {r2} (intact)"

    # One value of the current manifest changed in the bucket: refused, naming both.
    manifest_key = f"prefix/releases/{r2}/manifest.json"
    original = object_store.get(manifest_key)
    tampered = {**json.loads(original), "code_version": "edited in the bucket"}
    object_store.client().put_object(
        Bucket=object_store.bucket, Key=manifest_key, Body=json.dumps(tampered).encode()
    )
    with pytest.raises(ReleaseIntegrityError) as refused:
        current_release(releases)
    message = str(refused.value)
    pointer_url, manifest_url = (
        f"{object_store.url}/releases/CURRENT",
        f"{object_store.url}/{manifest_key.removeprefix('prefix/')}",
    )
    assert f"releases/CURRENT ({pointer_url}) names release {r2}" in message
    assert f"its manifest {manifest_url} does not match its content hash" in message
    assert f"expected content_sha256 {second[CONTENT_HASH]}" in message
    assert f"actual {manifest_sha256(tampered)}" in message and REPAIR_COMMAND in message
    # A rollback is refused with it, and changes nothing in the bucket.
    before = {k: object_store.get(k) for k in object_store.object_keys()}
    with pytest.raises(RuntimeError, match="does not match its content hash"):
        rollback(releases, OFF, "m1 drifted", home=e2i_home)
    assert {k: object_store.get(k) for k in object_store.object_keys()} == before
    # The store holds no model files: a rollback or repair needs the home that does.
    with pytest.raises(ValueError, match=f"object store {object_store.url}.*home="):
        rollback(releases, OFF, "no home")
    lines, intact = listing(releases)
    assert not intact and f"CURRENT: BROKEN: releases/CURRENT ({pointer_url})" in lines[-1]

    # The repair: a release of kind repair restores r1; r2 is set aside in the bucket.
    outcome = repair(releases, OFF, "manifest edited in the bucket", home=e2i_home)
    release = outcome["release"]
    assert release["kind"] == "repair" and release["restores_release"] == r1
    assert outcome["current_was"] == r2 and "does not match" in outcome["problem"]
    assert release["model"]["model_file"] == models["m0"]["model_file"]
    assert object_store.get("prefix/releases/CURRENT") == f"{release['release_id']}\n".encode()
    restored = current_release(releases)
    assert restored["release_id"] == release["release_id"] and verification(restored) == VERIFIED
    assert restored["model"]["model_sha256"] == models["m0"]["model_sha256"]
    (aside,) = outcome["set_aside"]
    aside_key = f"prefix/releases/{aside['moved_to']}"
    assert aside["moved_to"].startswith(f".set_aside/{r2}.")
    keys = object_store.object_keys()
    assert not any(k.startswith(f"prefix/releases/{r2}/") for k in keys)
    assert {k for k in keys if k.startswith(aside_key + "/")} == {
        f"{aside_key}/{f}" for f in ("manifest.json", "report.html", "set_aside.json")
    }
    assert object_store.get(f"{aside_key}/manifest.json") == json.dumps(tampered).encode()
    note = json.loads(object_store.get(f"{aside_key}/set_aside.json"))
    assert note["repair_release"] == release["release_id"] and note["manifest"] == manifest_url
    assert release_ids(releases) == [r1, release["release_id"]]
    assert listing(releases)[1]
    # Nothing under the home but the model files it already held: no releases, no lock.
    assert _files_under(e2i_home) == ["models/m0/model.txt", "models/m1/model.txt"]


# --- the releases lock across processes ---------------------------------------------

RELEASER = """
import json, sys, time
from pathlib import Path
from e2i_platform.lib.releases import current_release
from e2i_platform.lib.store import store_root
from e2i_platform.promotion.release import new_release_id, promote, release_lock
from e2i_platform.resources.mlflow import MlflowResource

url, rounds, ready_dir, me = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
off = MlflowResource(enabled=False, tracking_uri="sqlite:///unused.db", experiment="e",
                     registered_model="m")
releases = store_root("/nonexistent-home", url)
(ready_dir / me).touch()
while len(list(ready_dir.iterdir())) < 2:  # both imported: start together
    time.sleep(0.01)
spans = []
for n in range(rounds):
    with release_lock(releases):
        start = time.time()
        current = current_release(releases)        # read CURRENT ...
        time.sleep(0.05)                           # (another releaser would slip in here)
        promote(releases, off, {                   # ... release after it
            "release_id": new_release_id("promotion"), "kind": "promotion",
            "created_at": "now", "model": {"model_file": f"models/{me}{n}/model.txt",
            "model_sha256": f"sha-{me}{n}", "mlflow": {}}, "metrics": {}, "params": {},
            "data_versions": {}, "features": {}, "gates": {}, "code_version": "c",
            "previous_release": current["release_id"] if current else None,
        })
        spans.append([start, time.time()])
    time.sleep(0.005)
print(json.dumps(spans))
"""

HOLDER = """
import sys, time
from e2i_platform.lib.store import store_root
from e2i_platform.promotion.release import release_lock

with release_lock(store_root("/nonexistent-home", sys.argv[1])):
    print("locked", flush=True)
    time.sleep(600)
"""


def _python(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ),  # the store and the lock database, as a deployment names them
        start_new_session=True,
    )


def test_two_processes_releasing_at_once_take_turns(
    object_store: ObjectStore, shared, e2i_home: Path, tmp_path
):
    releases = release_store(shared)
    holder = _python(HOLDER, object_store.url)
    try:
        assert holder.stdout.readline().strip() == "locked"
        # Held by another process: a PostgreSQL advisory lock named by the releases' URL.
        busy = pytest.raises(
            store.LockTimeout, match=rf"lock {object_store.url}/releases/\.lock \(PostgreSQL"
        )
        with busy, release_lock(releases, timeout=1):
            pass
    finally:
        os.killpg(holder.pid, 9)
        holder.wait()

    rounds = 4
    ready = tmp_path / "ready"
    ready.mkdir()
    procs = [_python(RELEASER, object_store.url, str(rounds), str(ready), me) for me in "ab"]
    outputs = [p.communicate(timeout=180)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]

    # Never two releasers at once, and they did take turns.
    spans = sorted(
        (start, end, who)
        for who, out in zip("ab", outputs, strict=True)
        for start, end in json.loads(out)
    )
    assert len(spans) == 2 * rounds
    for (_, end, _), (start, _, _) in zip(spans[:-1], spans[1:], strict=True):
        assert end <= start
    assert sum(a[2] != b[2] for a, b in zip(spans[:-1], spans[1:], strict=True)) >= 1
    # No lost update: the releases form one chain, each after the one before it, and
    # CURRENT names its end.
    ids = release_ids(releases)
    assert len(ids) == 2 * rounds
    manifests = [check_manifest(releases, i).manifest for i in ids]
    assert [m["previous_release"] for m in manifests] == [None, *ids[:-1]]
    assert current_release(releases)["release_id"] == ids[-1]
    assert _files_under(e2i_home) == []


# --- landing files in the bucket ----------------------------------------------------


def _source(settings, home: Path, **overrides):
    from e2i_platform.ingest.sources import SourceResource

    fields = dict(
        landing_dir=SourceResource.landing_dir_for(home, settings.platform.store.url),
        seed=11,
        patients=300,
        hcps=40,
        history_days=30,
        anchor="2026-12-03T00:00:00",
        default_policy="landing",
    )
    return SourceResource(**(fields | overrides))


def test_landing_files_are_read_from_the_object_store(
    object_store: ObjectStore, shared, e2i_home: Path, generated
):
    from e2i_platform.definitions import build_definitions
    from e2i_platform.ingest.sources import LandingFileError

    landing = f"{object_store.url}/landing"
    assert build_definitions(shared).resources["source"].landing_dir == landing
    source = _source(shared, e2i_home)
    triggers = generated.table("triggers").head(10)
    events = generated.table("treatment_events").head(20)
    parquet, csv = io.BytesIO(), io.StringIO()
    triggers.to_parquet(parquet, index=False)
    events.to_csv(csv, index=False)
    put = object_store.client().put_object
    put(Bucket=object_store.bucket, Key="prefix/landing/triggers.parquet", Body=parquet.getvalue())
    put(Bucket=object_store.bucket, Key="prefix/landing/treatment_events.csv", Body=csv.getvalue())

    # Parquet: the frame as landed, its source the object's URL and sha256.
    loaded = source.load("triggers")
    pd.testing.assert_frame_equal(loaded.frame, triggers)
    assert loaded.source == {
        "kind": "landing_file",
        "path": f"{landing}/triggers.parquet",
        "sha256": _sha256(parquet.getvalue()),
        "policy": "landing",
    }
    assert loaded.version == f"landing-{_sha256(parquet.getvalue())[:16]}"
    assert source.source_version("triggers") == loaded.version
    # CSV: text as is, booleans parsed strictly.
    landed = source.load("treatment_events")
    assert landed.source["path"] == f"{landing}/treatment_events.csv"
    assert landed.frame["treatment_event_id"].tolist() == events["treatment_event_id"].tolist()
    assert landed.frame["cost"].dtype == object
    assert landed.frame["discontinuation_flag"].tolist() == events["discontinuation_flag"].tolist()

    # Missing under the `landing` policy: fails naming both URLs looked for.
    with pytest.raises(LandingFileError) as refused:
        source.load("hcp_profiles")
    assert f"expected {landing}/hcp_profiles.parquet or {landing}/hcp_profiles.csv" in str(
        refused.value
    )
    # Unreadable: named by its URL.
    put(Bucket=object_store.bucket, Key="prefix/landing/causal_paths.parquet", Body=b"PAR1 no")
    with pytest.raises(LandingFileError, match=f"landing file {landing}/causal_paths.parquet "):
        source.load("causal_paths")
    assert _files_under(e2i_home) == []
