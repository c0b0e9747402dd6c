"""`no_leakage` on training_dataset: a blocking check that applies the limits of
config/training.yaml (the split gap is the outcome window), run by Dagster on a
stand-in training_dataset."""

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from e2i_platform.training.checks import no_leakage

EPOCH = pd.Timestamp("1970-01-01", tz="UTC")


def test_the_check_is_blocking_on_training_dataset_and_states_its_rules():
    assert isinstance(no_leakage, dg.AssetChecksDefinition)
    (spec,) = no_leakage.check_specs
    assert spec.key == dg.AssetCheckKey(dg.AssetKey("training_dataset"), "no_leakage")
    assert spec.blocking is True
    for words in (
        "No patient in two splits",
        "no feature value from after its row's cutoff",
        "at least one outcome window between them",
        "single-feature ROC-AUC above the limit",
        "label prevalence in its band",
    ):
        assert words in spec.description


def _dataset(gap_days: int, prevalence: float) -> pd.DataFrame:
    """One cutoff per split, `gap_days` apart, an honest feature, a given label share."""
    rng = np.random.default_rng(0)
    n = 400
    first = pd.Timestamp("2026-01-05", tz="UTC")
    cutoffs = [first + pd.Timedelta(days=gap_days * i) for i in range(3)]
    cutoff = pd.DatetimeIndex(cutoffs)[np.repeat([0, 1, 2], [200, 100, 100])]
    labels = np.zeros(n, dtype="int64")
    labels[rng.permutation(n)[: round(prevalence * n)]] = 1
    return pd.DataFrame(
        {
            "patient_id": [f"PAT{i:08d}" for i in range(n)],
            "event_timestamp": cutoff,
            "label": labels,
            "split": np.repeat(["train", "validation", "test"], [200, 100, 100]),
            "patient_features__events_total": rng.integers(0, 30, n),
            "patient_features__snapshot_epoch": (cutoff - EPOCH) // pd.Timedelta(seconds=1) - 86400,
        }
    )


class Case(dg.Config):
    gap_days: int
    prevalence: float


@dg.asset(name="training_dataset")
def standin_training_dataset(config: Case) -> pd.DataFrame:
    return _dataset(config.gap_days, config.prevalence)


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory) -> dict:
    """The check's evaluation on a dataset at the configured limits and one beyond them."""
    from e2i_platform.resources.config import ConfigResource
    from e2i_platform.settings import load_settings
    from e2i_platform.settings.loader import REPO_ROOT

    found = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("E2I_HOME", str(tmp_path_factory.mktemp("e2i")))
        for key in ("E2I_ENV", "E2I_CONFIG_DIR", "E2I_RUN_MODE"):
            mp.delenv(key, raising=False)
        training = load_settings().training
        config = ConfigResource(config_dir=str(REPO_ROOT / "config"), env="local")
        window = training.dataset.outcome_window_days
        band = training.leakage.prevalence
        cases = {
            "at_limits": {"gap_days": window, "prevalence": band.max},
            "beyond": {"gap_days": window - 1, "prevalence": band.max + 0.05},
        }
        with dg.instance_for_test() as instance:
            for name, case in cases.items():
                result = dg.materialize(
                    [standin_training_dataset, no_leakage],
                    resources={"e2i_config": config},
                    instance=instance,
                    run_config={"ops": {"training_dataset": {"config": case}}},
                    raise_on_error=False,
                )
                (evaluation,) = result.get_asset_check_evaluations()
                found[name] = evaluation
        found["training"] = training
    return found


def _meta(evaluation, key: str):
    return evaluation.metadata[key].value


def test_a_dataset_at_the_configured_limits_passes(verdicts):
    training, passed = verdicts["training"], verdicts["at_limits"]
    assert passed.passed is True, passed.description
    assert _meta(passed, "split_gap_limit_days") == training.dataset.outcome_window_days
    band = training.leakage.prevalence
    assert _meta(passed, "prevalence_band") == [band.min, band.max]
    assert _meta(passed, "prevalence") == band.max


def test_a_dataset_beyond_the_limits_is_a_blocking_error(verdicts):
    training, failed = verdicts["training"], verdicts["beyond"]
    window = training.dataset.outcome_window_days
    assert failed.passed is False
    assert failed.severity == dg.AssetCheckSeverity.ERROR
    counts = _meta(failed, "failure_counts")
    assert counts[f"split gaps shorter than {window} days"] == 2
    assert counts["label prevalence outside band"] == 1
