"""The rows a hyperparameter search tunes on: all of them, or a sample when there are many.

A search's cost grows with the rows each trial boosts over, while the ranking of
hyperparameters settles long before brand size. Above `max_train_rows` training
rows, the search therefore tunes on a sample of whole patients (a patient's rows
stay together, as the splits keep them), drawn separately in the train and the
validation split, stratified by whether the patient has any positive label so the
class balance holds, with a fixed seed over sorted patient ids so the same data
always give the same sample. The final model still trains on every row.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from e2i_platform.training.model_data import ModelData

TUNED_SPLITS = ("train", "validation")  # the test split is never used to tune


def _sample_patients(
    frame: pd.DataFrame, y: pd.Series, fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """Row mask keeping `fraction` of the patients of each stratum (any positive label)."""
    positive = y.groupby(frame["patient_id"].to_numpy()).max().sort_index()
    keep: list = []
    for _, ids in positive.groupby(positive.to_numpy()):
        patients = ids.index.to_numpy()
        n = max(1, round(fraction * len(patients)))
        keep.extend(patients[rng.permutation(len(patients))[:n]])
    return frame["patient_id"].isin(keep).to_numpy()


def tuning_sample(data: ModelData, max_train_rows: int, seed: int) -> tuple[ModelData, dict]:
    """The data the search tunes on and a description of it (for the study's record and
    its fingerprint): the full data when the train split has at most `max_train_rows`."""
    rows = {s: len(data.y[s]) for s in TUNED_SPLITS}
    if rows["train"] <= max_train_rows:
        return data, {"sampled": False, "rows": rows, "max_train_rows": max_train_rows}
    fraction = max_train_rows / rows["train"]
    rng = np.random.default_rng(seed)
    X, y, frame = dict(data.X), dict(data.y), dict(data.frame)
    for split in TUNED_SPLITS:
        mask = _sample_patients(data.frame[split], data.y[split], fraction, rng)
        X[split], y[split], frame[split] = X[split][mask], y[split][mask], frame[split][mask]
    sampled = replace(data, X=X, y=y, frame=frame)
    return sampled, {
        "sampled": True,
        "fraction_of_patients": round(fraction, 6),
        "rows": {s: len(y[s]) for s in TUNED_SPLITS},
        "rows_of_full_data": rows,
        "patients": {s: int(frame[s]["patient_id"].nunique()) for s in TUNED_SPLITS},
        "positive_rate": {s: round(float(y[s].mean()), 4) for s in TUNED_SPLITS},
        "stratified_by": "patient has a positive label",
        "seed": seed,
        "max_train_rows": max_train_rows,
    }
