"""Batch scoring with the champion: current patients, online features, `ml_predictions`."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from e2i_platform.features.specs import FEATURE_SERVICE

CHUNK = 1000  # entity rows per online read


def current_patients(journeys: pd.DataFrame) -> pd.DataFrame:
    """One entity row per patient whose latest journey has not ended."""
    latest = journeys.sort_values("journey_start_date").groupby("patient_id").tail(1)
    open_ = latest[latest["journey_end_date"].isna()]
    return pd.DataFrame(
        {
            "patient_id": open_["patient_id"].astype(str).to_numpy(),
            "hcp_id": open_["hcp_id"].astype(str).to_numpy(),
            "brand": open_["brand"].astype(str).to_numpy(),
            "region": open_["geographic_region"].astype(str).to_numpy(),
        }
    ).sort_values("patient_id", ignore_index=True)


def online_feature_frame(store, entities: pd.DataFrame) -> pd.DataFrame:
    from e2i_platform.features.online import ServiceReader

    reader = ServiceReader(store, FEATURE_SERVICE)
    try:
        rows = entities.to_dict("records")
        parts = [pd.DataFrame(reader.read(rows[i : i + CHUNK])) for i in range(0, len(rows), CHUNK)]
    finally:
        reader.close()
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def score_current_patients(home: Path, champion: dict, journeys: pd.DataFrame, store):
    """Scores of the current patients by the release's model: its file in `home`, the
    models' store (`training.model_run.model_store`: the home, or the object store; the
    manifest names it relative to that root), as it was released (sha256)."""
    from e2i_platform.training.model_data import as_model_input
    from e2i_platform.training.model_run import load_verified_booster, model_path
    from e2i_platform.training.run_files import METADATA_FILE

    model = champion["model"]
    model_file = model_path(home, model, f"release {champion['release_id']}")
    try:
        booster = load_verified_booster(model_file, model["model_sha256"])
    except ValueError as problem:
        raise ValueError(
            f"patient_risk_scores: release {champion['release_id']}'s model file {problem}"
        ) from None
    metadata = json.loads((model_file.parent / METADATA_FILE).read_text())
    entities = current_patients(journeys)
    served = online_feature_frame(store, entities)
    features = model["features"]
    missing_columns = [f for f in features if f not in served.columns]
    if len(entities) and missing_columns:
        raise ValueError(
            f"patient_risk_scores: the feature service {FEATURE_SERVICE} does not serve "
            f"{missing_columns}, which the champion {champion['release_id']} needs"
        )
    X = as_model_input(served, features, metadata["categories"]) if len(entities) else None
    score = booster.predict(X) if X is not None else []
    threshold = champion["metrics"]["threshold"]
    version = model.get("mlflow", {}).get("model_version") or f"sha-{model['model_sha256'][:12]}"
    now = pd.Timestamp(datetime.now(UTC))
    stamp = now.strftime("%Y%m%d%H%M%S")
    scores = pd.DataFrame(
        {
            "prediction_id": [f"PRED{stamp}{i:08d}" for i in range(len(entities))],
            "model_version": pd.Series([str(version)] * len(entities), dtype="string[pyarrow]"),
            "patient_id": entities["patient_id"].astype("string[pyarrow]"),
            "prediction_timestamp": pd.Series([now] * len(entities), dtype="datetime64[ns, UTC]"),
            "prediction_type": pd.Series(["churn"] * len(entities), dtype="string[pyarrow]"),
            "prediction_value": pd.Series(score, dtype="float64"),
            "prediction_class": (pd.Series(score, dtype="float64") >= threshold).astype("int64"),
        }
    )
    scores["prediction_id"] = scores["prediction_id"].astype("string[pyarrow]")
    scores["confidence_score"] = scores["prediction_value"].where(
        scores["prediction_class"] == 1, 1 - scores["prediction_value"]
    )
    unserved = 0
    if len(entities):
        unserved = int(
            served[[c for c in features if c.startswith("patient_features__")]]
            .isna()
            .all(axis=1)
            .sum()
        )
    stats = {
        "patients_scored": len(scores),
        "patients_without_online_patient_features": unserved,
        "threshold": threshold,
        "positive_share": round(float(scores["prediction_class"].mean()), 4) if len(scores) else 0,
    }
    return scores, stats
