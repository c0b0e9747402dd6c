"""Model files in an S3-compatible object store (a real moto server process), with
`platform.store.url` set (E2I_STORE_URL) and an empty home: training runs write their
variants to `s3://<bucket>/prefix/models/<model>/spec-…_exec-…/v<N>/` (allocated under
the PostgreSQL lock, each file one PUT, a variant being written guarded by its writer's
PostgreSQL lock), records name them relative to the store, and every reader --
LightGBM through `model_path`, scoring with the champion, the champion comparison, the
model's size, a rollback and a repair that verify the model files, the reuse check of
`make run` -- reads them there. Nothing is written under the home.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from s3_fixtures import ObjectStore

from e2i_platform.lib.releases import current_release, release_store
from e2i_platform.lib.store import store_root
from e2i_platform.promotion.release import new_release_id, promote, rollback
from e2i_platform.promotion.repair import repair
from e2i_platform.resources.mlflow import MlflowResource
from e2i_platform.resources.publication import atomic_write_json
from e2i_platform.settings import load_settings
from e2i_platform.training.model_run import (
    _champion_on_same_test,
    _record,
    load_booster,
    model_path,
    model_store,
)
from e2i_platform.training.runs import ModelRuns

pytest_plugins = ["s3_fixtures"]  # object_store, s3_endpoint

OFF = MlflowResource(
    enabled=False, tracking_uri="sqlite:///unused.db", experiment="e", registered_model="m"
)
MODEL = "discontinuation_lgbm"
SPEC, EXEC = "a" * 64, "b" * 64
VARIANTS = f"models/{MODEL}/spec-{SPEC[:8]}_exec-{EXEC[:8]}"


def _files_under(root: Path) -> list[str]:
    return sorted(str(Path(d, f).relative_to(root)) for d, _, fs in os.walk(root) for f in fs)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def shared(object_store: ObjectStore, e2i_home: Path, monkeypatch):
    """The platform's settings with `platform.store.url` on the bucket and an empty home."""
    monkeypatch.setenv("E2I_STORE_URL", object_store.url)
    settings = load_settings()
    assert settings.platform.store.url == object_store.url
    assert _files_under(e2i_home) == []
    return settings


@pytest.fixture(scope="module")
def feature_store(tmp_path_factory):
    """A real Feast store serving the feature service from an empty SQLite online store,
    in a directory of its own (not the home: only the models are under test here)."""
    from e2i_platform.features.repo_objects import build_objects
    from e2i_platform.resources.feast import FeastResource

    where = tmp_path_factory.mktemp("feast")
    store = FeastResource(home=str(where), project="e2i_models_s3", online_store="sqlite").store()
    store.apply(build_objects(where / "warehouse"))
    return store


def _served_numeric_features() -> list[str]:
    """The feature service's numeric columns, as scoring reads them online."""
    from e2i_platform.features.specs import SERVICE_VIEWS, VIEWS

    return [
        f"{view}__{f.name}"
        for view in SERVICE_VIEWS
        for f in VIEWS[view].features
        if f.dtype != "str"
    ]


def _train(features: list[str], seed: int, rounds: int):
    import lightgbm as lgb

    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(600, len(features))), columns=features)
    y = (X[features[0]] + rng.normal(scale=0.7, size=len(X)) > 0).astype(int)
    params = {"objective": "binary", "verbose": -1, "num_leaves": 7, "seed": seed}
    return lgb.train(params, lgb.Dataset(X, y), num_boost_round=rounds), X, y


def _write_version(runs: ModelRuns, mode: str, booster, features: list[str]) -> dict:
    """A variant as `training.model_run.train_or_reuse` writes one, and its record."""
    with runs.decided(mode) as decision:
        assert decision.action == "train"
        metrics = {"valid_auc": 0.7, "rounds": booster.current_iteration()}
        metadata = {
            "spec": SPEC,
            "exec": EXEC,
            "params": {"num_leaves": 7},
            "rounds": booster.current_iteration(),
            "features": features,
            "categories": {},
            "mode": mode,
            "action": decision.action,
            "previous": None,
            "mlflow": {"tracking": "off"},
        }
        runs.write(decision.path, lambda p: booster.save_model(str(p)), metrics, metadata)
    return _record(runs.root.parent, decision, metrics, {**metadata, "finished_at": "now"})


def _release(releases, model: dict) -> dict:
    current = current_release(releases)
    return {
        "release_id": new_release_id("promotion"),
        "kind": "promotion",
        "created_at": "now",
        "model": {
            **{k: model[k] for k in ("model_file", "model_sha256", "features")},
            "mlflow": {},
        },
        "metrics": {"threshold": 0.5, "roc_auc": 0.7},
        "params": {},
        "data_versions": {},
        "features": {},
        "gates": {},
        "code_version": "c",
        "previous_release": current["release_id"] if current else None,
    }


def _journeys(n: int) -> pd.DataFrame:
    """n patients with an open journey (scored) and one whose journey ended (not)."""
    ids = [f"P{i:03d}" for i in range(n + 1)]
    return pd.DataFrame(
        {
            "patient_id": ids,
            "hcp_id": ["H1"] * (n + 1),
            "brand": ["Kisqali"] * (n + 1),
            "geographic_region": ["northeast"] * (n + 1),
            "journey_start_date": pd.to_datetime(["2026-01-01"] * (n + 1)),
            "journey_end_date": pd.to_datetime([None] * n + ["2026-02-01"]),
        }
    )


def test_model_files_live_in_the_object_store(
    object_store: ObjectStore, shared, e2i_home: Path, feature_store
):
    from e2i_platform.ops.stored import _record_problem
    from e2i_platform.promotion.scoring import score_current_patients
    from e2i_platform.training.evaluation import model_size

    bucket = object_store.client()
    models = model_store(shared)
    assert str(models) == object_store.url
    features = _served_numeric_features()
    runs = ModelRuns(models / "models", MODEL, SPEC, EXEC)

    # --- v1: written to the bucket, each file whole, the variant allocated by a marker.
    booster1, X, y = _train(features, seed=1, rounds=20)
    first = _write_version(runs, "reuse_if_exists", booster1, features)
    assert first["path"] == f"{VARIANTS}/v1"
    assert first["model_file"] == f"{VARIANTS}/v1/model.txt"  # relative to the store
    assert object_store.object_keys() == [
        f"prefix/{VARIANTS}/v1/{f}"
        for f in (".allocated", "metadata.json", "metrics.json", "model.txt")
    ]
    stored_bytes = object_store.get(f"prefix/{first['model_file']}")
    assert _sha256(stored_bytes) == first["model_sha256"]
    assert stored_bytes.decode() == booster1.model_to_string()
    metadata = json.loads(object_store.get(f"prefix/{VARIANTS}/v1/metadata.json"))
    assert metadata["features"] == features and metadata["finished_at"]
    # Read back through the platform (model_path + LightGBM) and through boto3's bytes.
    path = model_path(models, first, "trained_model")
    assert str(path) == f"{object_store.url}/{first['model_file']}"
    expected1 = booster1.predict(X)
    np.testing.assert_allclose(load_booster(path).predict(X), expected1)
    import lightgbm as lgb

    np.testing.assert_allclose(lgb.Booster(model_str=stored_bytes.decode()).predict(X), expected1)
    # The same record names the same object from any machine's home.
    elsewhere = store_root("/srv/another-machine/e2i", object_store.url)
    assert str(model_path(elsewhere, first, "r")) == str(path)
    # ... and nothing outside the store's layout is read.
    with pytest.raises(ValueError, match="leaves the store"):
        model_path(models, {"model_file": f"../other/{first['model_file']}"}, "r")
    # Complete in the store: the run mode reuses it.
    assert runs.completion(1).complete
    with runs.decided("reuse_if_exists") as reused:
        assert reused.action == "reuse"
    size = model_size(models, first)
    assert size["measured"] and set(size["files"]) == {"metadata.json", "metrics.json", "model.txt"}
    assert size["files"]["model.txt"] == len(stored_bytes)

    # --- v2, a second version; then v3 left incomplete is resumed in place, and while
    # its resumer holds v3's writer lock (a PostgreSQL advisory lock, nothing in the
    # bucket) another resume leaves v3 alone and allocates v4.
    booster2, _, _ = _train(features, seed=2, rounds=35)
    second = _write_version(runs, "force_new", booster2, features)
    assert second["model_file"] == f"{VARIANTS}/v2/model.txt"
    assert _sha256(object_store.get(f"prefix/{second['model_file']}")) == second["model_sha256"]
    assert runs.variants() == [1, 2]
    with runs.decided("continue_from_previous") as continued:  # allocates v3, from v2
        assert (continued.variant, str(continued.previous)) == (3, f"{models}/{VARIANTS}/v2")
    v3_model = f"prefix/{VARIANTS}/v3/model.txt"
    bucket.put_object(Bucket=object_store.bucket, Key=v3_model, Body=b"x")
    assert runs.completion(3).reason == "missing metrics.json"
    with runs.decided("resume_if_incomplete") as resumed:
        assert (resumed.action, resumed.variant) == ("resume", 3)
        assert [k for k in object_store.object_keys() if "/v3/" in k] == [
            f"prefix/{VARIANTS}/v3/.allocated"
        ]
        bucket.put_object(Bucket=object_store.bucket, Key=v3_model, Body=b"retraining")
        with runs.decided("resume_if_incomplete") as other:
            assert (other.action, other.variant) == ("train", 4)
            assert "v3 is being written by another run" in other.reason
        assert object_store.get(v3_model) == b"retraining"
    assert runs.variants() == [1, 2, 3, 4]
    # The locks left nothing in the bucket: every key of the spec/exec is a variant's.
    assert all(
        re.fullmatch(rf"prefix/{VARIANTS}/v[1-4]/[^/]+", k)
        for k in object_store.object_keys()
        if k.startswith(f"prefix/{VARIANTS}/")
    )

    # --- releases of v1 then v2; the champion comparison reads v2 from the store.
    releases = release_store(shared)
    r1 = promote(releases, OFF, _release(releases, first))["release_id"]
    r2 = promote(releases, OFF, _release(releases, second))["release_id"]
    data = SimpleNamespace(
        X={"test": X}, y={"test": y}, frame={"test": pd.DataFrame({"region": ["ne"] * len(X)})}
    )
    champion = _champion_on_same_test(releases, models, data, first, min_rows=10)
    assert champion["release_id"] == r2 and champion["comparable"] is True
    from sklearn.metrics import roc_auc_score

    assert champion["roc_auc_same_test"] == round(roc_auc_score(y, booster2.predict(X)), 6)

    # --- scoring with the champion's model from the store.
    journeys = _journeys(5)
    served = pd.DataFrame(np.nan, index=range(5), columns=features)  # nothing online
    scores, stats = score_current_patients(
        models, current_release(releases), journeys, feature_store
    )
    assert stats["patients_scored"] == 5
    assert stats["patients_without_online_patient_features"] == 5
    np.testing.assert_allclose(scores["prediction_value"], booster2.predict(served))
    # A changed model object is refused, naming its URL.
    v2_key = f"prefix/{second['model_file']}"
    v2_bytes = object_store.get(v2_key)
    bucket.put_object(Bucket=object_store.bucket, Key=v2_key, Body=v2_bytes + b"\n")
    v2_url = re.escape(f"{object_store.url}/{second['model_file']}")
    with pytest.raises(ValueError, match=rf"{v2_url} is not the expected"):
        score_current_patients(models, current_release(releases), journeys, feature_store)
    # ...and the champion comparison does not score with it: the recorded figure is used.
    changed = _champion_on_same_test(releases, models, data, first, min_rows=10)
    assert changed["comparable"] is False and "roc_auc_same_test" not in changed
    assert re.search(rf"model file {v2_url} is not the expected file", changed["why"])

    # --- the reuse check of `make run`: a published trained_model record whose model
    # object changed (or went) is not reused.
    record_path = release_store(shared) / "warehouse" / "trained_model.json"
    atomic_write_json(second, record_path)
    assert "is not the expected file" in _record_problem("trained_model", record_path, shared)
    bucket.put_object(Bucket=object_store.bucket, Key=v2_key, Body=v2_bytes)
    assert _record_problem("trained_model", record_path, shared) is None
    bucket.delete_object(Bucket=object_store.bucket, Key=v2_key)
    assert _record_problem("trained_model", record_path, shared) == (
        f"its model file {object_store.url}/{second['model_file']} is missing"
    )
    bucket.put_object(Bucket=object_store.bucket, Key=v2_key, Body=v2_bytes)

    # --- a rollback verifies the restored model's object in the store.
    v1_key = f"prefix/{first['model_file']}"
    bucket.delete_object(Bucket=object_store.bucket, Key=v1_key)
    with pytest.raises(RuntimeError, match=re.escape(f"release {r1}'s model file {path} is gone")):
        rollback(releases, OFF, "v2 drifted", home=models)
    assert current_release(releases)["release_id"] == r2
    bucket.put_object(Bucket=object_store.bucket, Key=v1_key, Body=stored_bytes)
    rolled = rollback(releases, OFF, "v2 drifted", home=models)
    assert rolled["restores_release"] == r1
    assert rolled["model"]["model_file"] == first["model_file"]
    scores, _ = score_current_patients(models, current_release(releases), journeys, feature_store)
    np.testing.assert_allclose(scores["prediction_value"], booster1.predict(served))

    # --- a repair restores only a release whose model object is the one released: with
    # the rollback's manifest broken, r2 (newest) and r1 are the candidates, and their
    # objects are checked against the sha256 each manifest records.
    manifest_key = f"prefix/releases/{rolled['release_id']}/manifest.json"
    broken = {**json.loads(object_store.get(manifest_key)), "code_version": "edited"}
    bucket.put_object(Bucket=object_store.bucket, Key=manifest_key, Body=json.dumps(broken))
    for key, body in ((v1_key, stored_bytes), (v2_key, v2_bytes)):
        bucket.put_object(Bucket=object_store.bucket, Key=key, Body=body + b" ")
    with pytest.raises(RuntimeError, match="model file is missing or changed"):
        repair(releases, OFF, "manifest edited", home=models)
    assert object_store.get(manifest_key) == json.dumps(broken).encode()  # nothing changed
    bucket.put_object(Bucket=object_store.bucket, Key=v1_key, Body=stored_bytes)
    outcome = repair(releases, OFF, "manifest edited", home=models)
    assert outcome["release"]["restores_release"] == r1  # r2's object is changed: not it
    assert outcome["release"]["model"]["model_file"] == first["model_file"]
    assert current_release(releases)["model"]["model_sha256"] == first["model_sha256"]

    # Nothing of it under the home.
    assert _files_under(e2i_home) == []
