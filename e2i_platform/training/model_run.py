"""The body of `trained_model` and `model_evaluation`: a model run named by what it
was trained on and how, trained or reused per the run mode, evaluated beside the
current champion.

Model files live in the models' store (`model_store`): the home on this disk, or the
object store every machine shares (`platform.store.url`). Records and manifests name
them relative to that root (`lib.home_paths`), so one record names the same file on
every machine; LightGBM reads a model of the object store from its text and writes
one to a local temporary file that is uploaded whole."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from e2i_platform.features.specs import FEATURE_SERVICE, SERVICE_VIEWS, VIEWS
from e2i_platform.lib.versions import file_mismatch, sha256_file

if TYPE_CHECKING:
    from upath import UPath

# What the model needs to be served: pinned, so logging never infers requirements.
PIP_REQUIREMENTS = ("lightgbm==4.7.0", "pandas<3", "numpy", "scikit-learn==1.9.1")
# The training run's input dataset, and the registered version's tags naming what it is.
TRAINING_SET = "training_dataset"
TRAINING_SET_TAG = "e2i.training_set.content_hash"
MODEL_SHA_TAG = "e2i.model_sha256"


def service_spec() -> dict:
    """The feature service as the model sees it: views, features and dtypes."""
    return {
        "name": FEATURE_SERVICE,
        "views": {v: [f"{f.name}:{f.dtype}" for f in VIEWS[v].features] for v in SERVICE_VIEWS},
    }


def model_store(settings) -> Path | UPath:
    """The root model files live under (`<root>/models/...`) and records name them
    relative to: the home on this disk, or the object store `platform.store.url` names
    (an object with a `home` only, a stand-in for the settings, names the disk)."""
    from e2i_platform.lib.store import store_root

    store_settings = getattr(getattr(settings, "platform", None), "store", None)
    return store_root(settings.home, store_settings.url if store_settings else None)


def load_booster(path: Path | UPath):
    """The LightGBM model in `path`: a local file, or an object store's object (read as
    text: nothing is left on this disk)."""
    import lightgbm as lgb

    if hasattr(path, "fs"):
        return lgb.Booster(model_str=path.read_text(encoding="utf-8"))
    return lgb.Booster(model_file=str(path))


def load_verified_booster(path: Path | UPath, sha256: str):
    """The LightGBM model in `path` if its bytes are the ones `sha256` names, read once
    (what is hashed is what is loaded); raises `ValueError` saying why not (missing, or
    other bytes)."""
    import hashlib

    import lightgbm as lgb

    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ValueError(f"{path} is missing") from None
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ValueError(f"{path} is not the expected file (its sha256 is not {sha256[:12]}…)")
    return lgb.Booster(model_str=data.decode("utf-8"))


def model_file_mismatch(path: Path | UPath, sha256: str) -> str | None:
    """Why the model file `path` (on disk or in the object store) does not hold the bytes
    `sha256` names (missing, or other bytes), or None (`lib.versions.file_mismatch`)."""
    if not hasattr(path, "fs"):
        return file_mismatch(path, sha256)
    if not path.exists():
        return f"{path} is missing"
    if sha256_file(path) != sha256:
        return f"{path} is not the expected file (its sha256 is not {sha256[:12]}…)"
    return None


def model_path(home: Path | UPath, model: dict, where: str) -> Path | UPath:
    """The model file a record or manifest names (`model_file`: relative to the models'
    store, or absolute from before), as a file of the store `home` (the home, or the
    object store: `model_store`; `lib.home_paths`)."""
    from e2i_platform.lib.home_paths import resolve
    from e2i_platform.training.run_files import MODEL_FILE_LAYOUT

    return resolve(home, model["model_file"], MODEL_FILE_LAYOUT, f"{where}: model_file")


def _previous(home: Path | UPath, recorded: str | None, where: str) -> str | None:
    """The run a model continued from, relative to the home (absolute in old metadata)."""
    from e2i_platform.lib.home_paths import resolve, stored
    from e2i_platform.training.run_files import VARIANT_LAYOUT

    if not recorded:
        return None
    return stored(home, resolve(home, recorded, VARIANT_LAYOUT, f"{where}: previous"))


def model_identity(settings, dataset, hpo: dict, features: list[str]):
    """(spec fingerprint, exec fingerprint, what went into them)."""
    from e2i_platform.lib.versions import code_version, frame_version
    from e2i_platform.training.fingerprints import (
        exec_fingerprint,
        library_versions,
        spec_fingerprint,
    )

    training = settings.training.model_dump(exclude={"run_mode"})
    spec_inputs = {
        "training_config": {
            **training,
            "params": hpo["best_params"],
            "rounds": hpo["best_iteration"],
            "features": features,
        },
        "data_versions": {"training_dataset": frame_version(dataset)},
        "feature_service": service_spec(),
    }
    exec_inputs = {
        "code_version": code_version(),
        "libraries": library_versions(),
        "seed": settings.training.seed,
    }
    return (
        spec_fingerprint(**spec_inputs),
        exec_fingerprint(
            exec_inputs["code_version"], exec_inputs["libraries"], exec_inputs["seed"]
        ),
        {"spec": spec_inputs, "exec": exec_inputs},
    )


def _record(home: Path | UPath, decision, metrics: dict, metadata: dict) -> dict:
    """The trained_model record. Its paths are relative to the models' store
    (`lib.home_paths`): a copy of the home restored elsewhere reads its own model, never
    the original's; every machine reads the one of a shared object store."""
    from e2i_platform.lib.home_paths import stored

    path = decision.path
    return {
        "action": decision.action,
        "mode": decision.mode,
        "reason": decision.reason,
        "variant": decision.variant,
        "path": stored(home, path),
        "model_file": stored(home, path / "model.txt"),
        "model_sha256": sha256_file(path / "model.txt"),
        "spec": metadata["spec"],
        "exec": metadata["exec"],
        "params": metadata["params"],
        "rounds": metadata["rounds"],
        "features": metadata["features"],
        "metrics": metrics,
        "mlflow": metadata["mlflow"],
        "previous": _previous(home, metadata.get("previous"), str(path / "metadata.json")),
        "trained_at": metadata["finished_at"],
    }


def train_or_reuse(settings, dataset, hpo: dict, mode: str, mlflow) -> dict:
    from e2i_platform.lib.home_paths import stored
    from e2i_platform.training.hpo import fit_booster
    from e2i_platform.training.model_data import model_data
    from e2i_platform.training.run_files import METADATA_FILE, METRICS_FILE, MODEL_FILE
    from e2i_platform.training.runs import ModelRuns

    data = model_data(dataset)
    spec, exec_, inputs = model_identity(settings, dataset, hpo, data.features)
    home = model_store(settings)  # the models' store: the home, or the object store
    runs = ModelRuns(home / "models", settings.training.model_name, spec, exec_)
    # The variant's writer lock is held until its files are written: until then another
    # run's resume_if_incomplete sees it being written and leaves it alone.
    with runs.decided(mode) as decision:
        if decision.action == "reuse":
            path = decision.path
            metrics = json.loads((path / METRICS_FILE).read_text())
            metadata = json.loads((path / METADATA_FILE).read_text())
            record = _record(home, decision, metrics, metadata)
            # The reused model is this run's candidate: `challenger` names its version again.
            record["challenger"] = mlflow.keep_candidate(record["mlflow"])
            return record

        params, rounds = hpo["best_params"], hpo["best_iteration"]
        init_model, previous = None, None
        if decision.action == "continue":
            previous = decision.previous
            before = json.loads((previous / METADATA_FILE).read_text())
            if before["features"] != data.features:
                raise ValueError(
                    f"continue_from_previous: {previous} was trained on other features "
                    f"({len(before['features'])} vs {len(data.features)}); use force_new"
                )
            init_model, rounds = previous / MODEL_FILE, settings.training.continue_rounds
            # LightGBM reads a local file by its name; a model in the object store, as text.
            init_model = load_booster(init_model) if hasattr(init_model, "fs") else str(init_model)
        fit = fit_booster(data, params, settings.training.seed, rounds, None, init_model=init_model)
        metrics = {
            "valid_auc": round(fit.curve[-1][1], 6),
            "rounds": int(fit.booster.current_iteration()),
            "train_rows": int(len(data.y["train"])),
            "validation_rows": int(len(data.y["validation"])),
            "train_prevalence": round(float(data.y["train"].mean()), 6),
        }
        content_hash = inputs["spec"]["data_versions"]["training_dataset"]
        tracking = _log_training(
            mlflow,
            decision,
            params,
            metrics,
            fit.booster,
            data,
            (spec, exec_),
            dataset,
            content_hash,
        )
        metadata = {
            "spec": spec,
            "exec": exec_,
            "identity_inputs": inputs,
            "params": params,
            "rounds": metrics["rounds"],
            "features": data.features,
            "categories": data.categories,
            "mode": decision.mode,
            "action": decision.action,
            "previous": stored(home, previous) if previous else None,
            "mlflow": tracking,
            "finished_at": datetime.now(UTC).isoformat(),
        }
        runs.write(decision.path, lambda p: fit.booster.save_model(str(p)), metrics, metadata)
        record = _record(home, decision, metrics, metadata)
    # The file's hash exists once it is written: the version names the file it serves.
    mlflow.set_version_tags(tracking.get("model_version"), {MODEL_SHA_TAG: record["model_sha256"]})
    record["challenger"] = (
        {"alias": "challenger", "version": tracking["model_version"], "action": "set: new version"}
        if tracking.get("model_version")
        else {"alias": "challenger", "action": "none: tracking off"}
    )
    return record


def _log_training(
    mlflow, decision, params, metrics, booster, data, fingerprints, dataset, content_hash
) -> dict:
    """The training run (the training set as its input dataset, by content hash), the
    model, and its registration as the candidate (alias `challenger`)."""
    from e2i_platform.training.dataset import LABEL

    if not mlflow.enabled:
        return {"tracking": "off"}
    spec, exec_ = fingerprints
    run_id = mlflow.start_run(
        f"train-v{decision.variant}",
        params={**params, "run_mode": decision.mode, "action": decision.action},
        tags={"e2i.spec": spec, "e2i.exec": exec_, "e2i.kind": "training"},
    )
    mlflow.log_dataset(run_id, dataset, TRAINING_SET, content_hash, "training", targets=LABEL)
    mlflow.log_metrics(run_id, metrics)
    model_uri = mlflow.log_model(
        run_id, booster, data.X["validation"].head(5), list(PIP_REQUIREMENTS)
    )
    version = mlflow.register_candidate(
        model_uri,
        run_id,
        {
            "e2i.spec": spec,
            "e2i.exec": exec_,
            "e2i.action": decision.action,
            TRAINING_SET_TAG: content_hash,
        },
    )
    mlflow.end_run(run_id)
    return {
        "tracking": "on",
        "run_id": run_id,
        "run": mlflow.run_link(run_id),
        "model_uri": model_uri,
        "registered_model": mlflow.registered_model,
        "model_version": version,
    }


def evaluate_models(settings, dataset, trained: dict, mlflow) -> dict:
    from e2i_platform.lib.home_paths import stored
    from e2i_platform.lib.releases import release_store
    from e2i_platform.training.evaluation import evaluate
    from e2i_platform.training.model_data import model_data

    data = model_data(dataset)
    models = model_store(settings)
    model_file = model_path(models, trained, "trained_model")
    try:
        booster = load_verified_booster(model_file, trained["model_sha256"])
    except ValueError as problem:
        raise ValueError(
            f"model_evaluation: trained_model's file {problem}: it was replaced after "
            "training; materialize trained_model again"
        ) from None
    features = trained["features"]
    gates = settings.promotion
    record = evaluate(
        lambda X: booster.predict(X[features]),
        data,
        gates.fairness_gate.min_region_rows,
        gates.latency_gate.batch_rows,
        gates.latency_gate.repeats,
        settings.training.seed,
        # The latency and scoring-cost batches: one thread, so the cost is one core's.
        predict_one_core=lambda X: booster.predict(X[features], num_threads=1),
    )
    record["model"] = {
        "model_file": stored(models, model_file),
        "model_sha256": trained["model_sha256"],
        "mlflow": trained["mlflow"],
    }
    champion = _champion_on_same_test(
        release_store(settings), models, data, trained, gates.fairness_gate.min_region_rows
    )
    # The champion's curves are for the release report, not for every gate's metadata.
    record["champion_curves"] = {
        k: champion.pop(k) for k in ("curves", "region_auc") if k in champion
    }
    record["champion"] = champion
    run_id = trained["mlflow"].get("run_id")
    if mlflow.enabled and run_id:
        mlflow.log_metrics(
            run_id,
            {f"test_{k}": record[k] for k in ("roc_auc", "pr_auc", "brier")}
            | {"test_p95_ms": record["latency"]["p95_ms"]},
        )
    return record


def _champion_on_same_test(
    releases: Path | UPath, models: Path | UPath, data, trained: dict, min_rows: int
) -> dict:
    """The current champion's ROC-AUC on this test split (not its own old test split):
    the release CURRENT names in `releases` (`lib.releases.release_store`), its model
    file from `models` (`model_store`)."""
    from sklearn.metrics import roc_auc_score

    from e2i_platform.lib.releases import current_release
    from e2i_platform.training.curves import evaluation_curves
    from e2i_platform.training.evaluation import region_auc

    release = current_release(releases)
    if release is None:
        return {"exists": False}
    model = release["model"]
    out = {
        "exists": True,
        "release_id": release["release_id"],
        "model_version": model.get("mlflow", {}).get("model_version"),
        "same_model": model["model_sha256"] == trained["model_sha256"],
    }
    path = model_path(models, model, f"release {release['release_id']}")
    missing = [f for f in model["features"] if f not in data.X["test"].columns]
    why, booster = (f"features {missing}" if missing else None), None
    if not missing:
        try:
            # The champion as released: a file replaced since is not what was released.
            booster = load_verified_booster(path, model["model_sha256"])
        except ValueError as problem:
            why = f"model file {problem}"
    if booster is None:
        out["comparable"] = False
        out["why"] = why
        out["recorded_roc_auc"] = release["metrics"]["roc_auc"]
        return out
    score = booster.predict(data.X["test"][model["features"]])
    out["comparable"] = True
    out["roc_auc_same_test"] = round(float(roc_auc_score(data.y["test"], score)), 6)
    # The champion's curves and regional ROC-AUC on the same rows, for the release report.
    out["curves"] = evaluation_curves(data.y["test"], score)
    out["region_auc"] = region_auc(data.y["test"], score, data.frame["test"]["region"], min_rows)
    return out
