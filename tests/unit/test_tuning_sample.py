"""A big training set is tuned on a stratified sample of whole patients; the study says so
(its record and its warm-start fingerprint), and a small one is tuned on every row."""

import numpy as np
import optuna
import pandas as pd

from e2i_platform.settings import load_settings
from e2i_platform.training.dataset_fingerprint import FINGERPRINT_ATTR, DatasetFingerprint
from e2i_platform.training.model_data import ModelData
from e2i_platform.training.study import run_study
from e2i_platform.training.tuning_sample import tuning_sample


def _patient_data(patients: dict[str, int], seed: int = 0) -> ModelData:
    """Every patient has 4 rows; one in five patients has a positive label in one row."""
    rng = np.random.default_rng(seed)
    X, y, frame = {}, {}, {}
    for split, n in patients.items():
        ids = np.repeat([f"{split[0]}{i:06d}" for i in range(n)], 4)
        positive = np.repeat(rng.random(n) < 0.2, 4) & (np.arange(4 * n) % 4 == 3)
        x = pd.DataFrame({"f0": rng.normal(size=4 * n) + positive, "f1": rng.normal(size=4 * n)})
        X[split], y[split] = x, pd.Series(positive.astype(int))
        frame[split] = pd.DataFrame({"patient_id": ids})
    return ModelData(["f0", "f1"], [], {}, X, y, frame)


def _positive_patient_share(data: ModelData, split: str) -> float:
    return float(data.y[split].groupby(data.frame[split]["patient_id"].to_numpy()).max().mean())


def test_sample_keeps_whole_patients_and_the_class_balance_and_is_deterministic():
    data = _patient_data({"train": 5000, "validation": 1500, "test": 300})
    small, note = tuning_sample(data, max_train_rows=20_000, seed=0)
    assert small is data and note["sampled"] is False

    sampled, note = tuning_sample(data, max_train_rows=4_000, seed=0)
    assert note["sampled"] is True and note["fraction_of_patients"] == 0.2
    assert note["rows_of_full_data"] == {"train": 20_000, "validation": 6_000}
    assert abs(len(sampled.y["train"]) - 4_000) <= 8  # rounding per stratum, 4 rows each
    for split in ("train", "validation"):
        kept = sampled.frame[split]["patient_id"]
        # Whole patients: every kept patient has all four rows.
        assert kept.value_counts().eq(4).all()
        assert note["rows"][split] == len(kept) == len(sampled.X[split])
        assert (
            abs(_positive_patient_share(sampled, split) - _positive_patient_share(data, split))
            < 0.01
        )
    assert sampled.X["test"] is data.X["test"]  # never used to tune, never sampled

    again, _ = tuning_sample(data, max_train_rows=4_000, seed=0)
    other, _ = tuning_sample(data, max_train_rows=4_000, seed=1)
    assert again.frame["train"]["patient_id"].tolist() == kept_train(sampled)
    assert other.frame["train"]["patient_id"].tolist() != kept_train(sampled)


def kept_train(data: ModelData) -> list[str]:
    return data.frame["train"]["patient_id"].tolist()


def test_a_sampled_study_records_its_sample_and_fingerprints_what_it_tuned(e2i_home, tmp_path):
    data = _patient_data({"train": 600, "validation": 300, "test": 100})
    cfg = load_settings().optuna.model_copy(
        update={
            "n_trials": 3,
            "max_boost_rounds": 20,
            "tuning_sample": load_settings().optuna.tuning_sample.model_copy(
                update={"max_train_rows": 1_200}
            ),
        }
    )
    url = f"sqlite:///{tmp_path}/optuna.db"
    outcome = run_study(data, cfg, url, "dataset-v1", seed=7)
    sample = outcome.record["tuning_sample"]
    assert sample["sampled"] is True and sample["rows"]["train"] == 1_200
    study = optuna.load_study(study_name=outcome.record["study_name"], storage=url)
    assert study.user_attrs["tuning_sample"] == sample
    fingerprint = DatasetFingerprint.from_dict(study.user_attrs[FINGERPRINT_ATTR])
    assert fingerprint.rows == 1_200 and fingerprint.sampled_from_rows == 2_400
