"""Warm start seeds a study from similar past studies only, and says which and why."""

import json
from dataclasses import replace

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.samplers import RandomSampler, TPESampler
from optuna.trial import TrialState, create_trial

from e2i_platform.settings.models import WarmStartSettings
from e2i_platform.training.dataset_fingerprint import (
    FINGERPRINT_ATTR,
    DatasetFingerprint,
    dataset_fingerprint,
    similarity,
)
from e2i_platform.training.warm_start import warm_start

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE = {"x": FloatDistribution(0.0, 1.0), "n": IntDistribution(1, 10)}


def _frame(columns, rows=1000, positive_rate=0.2, seed=0):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({c: rng.normal(size=rows) for c in columns})
    y = pd.Series((np.arange(rows) < positive_rate * rows).astype("int64"))
    return X, y


BASE = dataset_fingerprint(
    *_frame(["age", "visits", "dose", "gap_days", "refills"]),
    algorithm="lightgbm",
    problem_type="binary_classification",
    search_space_version="v1",
)


def _objective(trial):
    x = trial.suggest_float("x", 0.0, 1.0)
    n = trial.suggest_int("n", 1, 10)
    return -((x - 0.8) ** 2) - 0.01 * (n - 7) ** 2


def _past(storage, name, fingerprint=BASE, n_trials=12, direction="maximize", seed=0):
    study = optuna.create_study(
        study_name=name, storage=storage, direction=direction, sampler=RandomSampler(seed=seed)
    )
    if fingerprint is not None:
        study.set_user_attr(FINGERPRINT_ATTR, fingerprint.as_dict())
    study.optimize(_objective, n_trials=n_trials)
    return study


def _new(storage, name="new", sampler=None):
    return optuna.create_study(
        study_name=name, storage=storage, direction="maximize", sampler=sampler
    )


def _seeded(study):
    return [t for t in study.trials if "warm_start_from" in t.user_attrs]


@pytest.fixture
def storage():
    return optuna.storages.InMemoryStorage()


# --- fingerprint and similarity ----------------------------------------------------------


def test_fingerprint_round_trips_through_json():
    X, y = _frame(["b", "a", "c"], rows=200, positive_rate=0.25)
    X["c"] = X["c"].astype("float32")
    fp = dataset_fingerprint(X, y, "lightgbm", "binary_classification", "v1")
    assert fp.feature_names == ("a", "b", "c")
    assert (fp.rows, fp.features, fp.positive_rate) == (200, 3, 0.25)
    assert len(fp.feature_set_hash) == 16
    int(fp.feature_set_hash, 16)
    assert DatasetFingerprint.from_dict(json.loads(json.dumps(fp.as_dict()))) == fp
    # Column order does not matter; a dtype does.
    assert dataset_fingerprint(X[["c", "a", "b"]], y, "lightgbm", "b", "v").feature_set_hash == (
        fp.feature_set_hash
    )
    X["c"] = X["c"].astype("float64")
    assert dataset_fingerprint(X, y, "lightgbm", "b", "v").feature_set_hash != fp.feature_set_hash


def test_from_dict_names_the_missing_or_bad_key():
    d = BASE.as_dict()
    del d["positive_rate"]
    with pytest.raises(ValueError, match="missing key 'positive_rate'"):
        DatasetFingerprint.from_dict(d)
    with pytest.raises(ValueError, match="'rows'"):
        DatasetFingerprint.from_dict({**BASE.as_dict(), "rows": "many"})
    with pytest.raises(ValueError, match="not a mapping"):
        DatasetFingerprint.from_dict(["rows"])


def test_similarity_components():
    assert similarity(BASE, BASE) == (1.0, [])
    score, reasons = similarity(BASE, replace(BASE, rows=BASE.rows * 10))
    assert score == 0.65 and reasons == ["rows 1000 vs 10000 (0.10x)"]
    other = dataset_fingerprint(*_frame(["p", "q"]), "lightgbm", "binary_classification", "v1")
    score, reasons = similarity(BASE, other)
    assert score == 0.65 and reasons[0].startswith("features Jaccard 0.00")
    score, reasons = similarity(BASE, replace(BASE, positive_rate=0.1))
    assert score == pytest.approx(0.9) and reasons == ["positive rate 0.200 vs 0.100"]
    score, reasons = similarity(BASE, replace(BASE, search_space_version="v0"))
    assert score == pytest.approx(0.95) and reasons == ["search space v1 != v0"]
    score, reasons = similarity(replace(BASE, algorithm="logistic_regression"), BASE)
    assert score == 0.0 and reasons == ["algorithm logistic_regression != lightgbm"]


# --- warm start ---------------------------------------------------------------------------


def test_similar_history_is_used_and_tpe_is_model_based_at_once(storage):
    past = _past(storage, "a")
    study = _new(storage, sampler=TPESampler(n_startup_trials=5, seed=0))
    plan = warm_start(
        study, storage, BASE, WarmStartSettings(max_seed_trials=10), SPACE, final_step=9
    )

    assert not plan.cold_start and (plan.seed_trials, plan.reevaluated) == (10, 5)
    [source] = plan.seeded
    assert (source.study_name, source.method, source.copied, source.reevaluated) == (
        "a",
        "trials",
        10,
        5,
    )
    assert source.score >= 0.7
    meta = study.user_attrs["warm_start"]
    assert meta["mode"] == "warm"
    assert meta["seeded"][0]["study_name"] == "a" and meta["seeded"][0]["score"] >= 0.7
    assert meta["summary"] == "warm start from 1 study (10 copied, 5 re-evaluated): a (1.00)"

    seeded = _seeded(study)
    ranked = sorted(past.trials, key=lambda t: -t.value)
    # Copies are PRUNED, marked, and hold the past value at the final step for TPE.
    assert len(seeded) == 10 and all(t.state == TrialState.PRUNED for t in seeded)
    assert all(t.user_attrs["warm_start_copy"] is True for t in seeded)
    assert [t.user_attrs["warm_start_value"] for t in seeded] == [t.value for t in ranked[:10]]
    assert [t.intermediate_values for t in seeded] == [{9: t.value} for t in ranked[:10]]
    # The past best five are queued, best first, to be measured again on this data.
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert [t.user_attrs["warm_start_trial"] for t in waiting] == [t.number for t in ranked[:5]]

    study.optimize(_objective, n_trials=5)
    reevaluated = [t for t in study.trials if "warm_start_suggested_by" in t.user_attrs]
    assert [t.params for t in reevaluated] == [t.params for t in ranked[:5]]
    assert all(t.state == TrialState.COMPLETE for t in reevaluated)

    # With 10 complete trials TPE is past its 5 startup trials: its first own trial is
    # not the random draw a cold study with the same seed makes.
    cold = _new(storage, "cold", sampler=TPESampler(n_startup_trials=5, seed=0))
    cold.optimize(_objective, n_trials=1)
    study.optimize(_objective, n_trials=1)
    assert study.trials[-1].params["x"] != cold.trials[0].params["x"]


@pytest.mark.parametrize("url", [False, True], ids=["memory", "sqlite"])
def test_copied_values_never_become_the_best_trial(tmp_path, url):
    from e2i_platform.training.hpo import best_trial, optuna_best_trial_number

    storage = f"sqlite:///{tmp_path / 'optuna.db'}" if url else optuna.storages.InMemoryStorage()
    _past(storage, "a")
    study = _new(storage)
    warm_start(study, storage, BASE, WarmStartSettings(top_k=0), SPACE)
    assert best_trial(study) is None  # only copied trials so far: nothing measured here
    assert optuna_best_trial_number(study) is None  # nor for Optuna

    def worse(trial):  # this data scores every point lower than the past data did
        return _objective(trial) - 10

    study.optimize(worse, n_trials=2)
    best = best_trial(study)
    assert best.number in {t.number for t in study.trials[-2:]}
    assert best.value < min(t.user_attrs["warm_start_value"] for t in _seeded(study))
    # Optuna's own best trial (what optuna-dashboard shows) is the same measured trial.
    reloaded = optuna.load_study(study_name="new", storage=storage)
    assert reloaded.best_trial.number == best.number == optuna_best_trial_number(study)


def test_sqlite_url_storage(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    _past(url, "a", n_trials=4)
    study = _new(url)
    plan = warm_start(study, url, BASE, WarmStartSettings(), SPACE)
    assert plan.seed_trials == 4 and len(_seeded(study)) == 4 and plan.reevaluated == 4
    reloaded = optuna.load_study(study_name="new", storage=url)
    assert reloaded.user_attrs["warm_start"]["mode"] == "warm"


@pytest.mark.parametrize(
    ("current", "past", "expected"),
    [
        pytest.param(
            BASE,
            dataset_fingerprint(
                *_frame(["p", "q", "r"]), "lightgbm", "binary_classification", "v1"
            ),
            "features Jaccard 0.00",
            id="different-features",
        ),
        pytest.param(BASE, replace(BASE, rows=10_000), "rows 1000 vs 10000", id="10x-size"),
        pytest.param(
            replace(BASE, algorithm="logistic_regression"),
            BASE,
            "algorithm logistic_regression != lightgbm",
            id="other-algorithm",
        ),
    ],
)
def test_dissimilar_history_is_rejected(storage, current, past, expected):
    _past(storage, "old", fingerprint=past)
    study = _new(storage)
    plan = warm_start(study, storage, current, WarmStartSettings(), SPACE)

    assert plan.cold_start and not plan.seeded and study.trials == []
    [rejected] = plan.rejected
    assert rejected.study_name == "old" and rejected.score < 0.7
    assert expected in rejected.reason
    assert plan.summary().startswith("cold start: every past study rejected (best score")
    assert study.user_attrs["warm_start"]["mode"] == "cold"


def test_empty_storage_is_a_cold_start(storage):
    study = _new(storage)
    plan = warm_start(study, storage, BASE, WarmStartSettings(), SPACE)
    assert plan.cold_start and plan.rejected == []
    assert plan.summary() == "cold start: no past study in storage"
    assert study.user_attrs["warm_start"]["summary"] == plan.summary()


def test_disabled_is_a_cold_start(storage):
    _past(storage, "a")
    study = _new(storage)
    plan = warm_start(study, storage, BASE, WarmStartSettings(enabled=False), SPACE)
    assert plan.cold_start and study.trials == []
    assert plan.summary() == "cold start: warm start disabled"
    assert [(r.study_name, r.score, r.reason) for r in plan.rejected] == [
        ("a", 1.0, "warm start disabled")
    ]


def test_unusable_studies_are_rejected_with_reason(storage):
    _past(storage, "a_no_fingerprint", fingerprint=None)
    bad = _past(storage, "b_bad_fingerprint", n_trials=2)
    bad.set_user_attr(FINGERPRINT_ATTR, {**BASE.as_dict(), "features": None})
    _past(storage, "c_minimize", direction="minimize", n_trials=2)
    _past(storage, "d_no_trials", n_trials=0)
    study = _new(storage)
    plan = warm_start(study, storage, BASE, WarmStartSettings(), SPACE)

    assert plan.cold_start and study.trials == []
    reasons = {r.study_name: r.reason for r in plan.rejected}
    assert reasons["a_no_fingerprint"] == "no dataset fingerprint"
    assert reasons["b_bad_fingerprint"].startswith("unreadable fingerprint")
    assert "'features'" in reasons["b_bad_fingerprint"]
    assert reasons["c_minimize"] == "direction minimize != maximize"
    assert reasons["d_no_trials"] == "no COMPLETE trial with a finite value"
    assert "new" not in reasons


def test_most_similar_first_and_limits_respected(storage):
    _past(storage, "a", fingerprint=replace(BASE, positive_rate=0.15), seed=1)
    _past(storage, "b", seed=2)
    _past(storage, "c", fingerprint=replace(BASE, positive_rate=0.18), seed=3)
    study = _new(storage)
    settings = WarmStartSettings(max_seed_trials=15, max_seed_studies=2)
    plan = warm_start(study, storage, BASE, settings, SPACE)

    assert [(s.study_name, s.copied, s.reevaluated) for s in plan.seeded] == [
        ("b", 12, 5),
        ("c", 3, 0),
    ]
    assert plan.seed_trials == 15 and len(study.trials) == 15 + 5
    assert [(r.study_name, r.reason) for r in plan.rejected] == [("a", "beyond max_seed_studies=2")]
    assert plan.summary() == (
        "warm start from 2 studies (15 copied, 5 re-evaluated): b (1.00), c (0.98); 1 rejected"
    )


def test_running_twice_seeds_nothing_twice(storage):
    _past(storage, "a")
    study = _new(storage)
    first = warm_start(study, storage, BASE, WarmStartSettings(), SPACE)
    second = warm_start(study, storage, BASE, WarmStartSettings(), SPACE)
    assert len(study.trials) == 12 + 5
    assert second.summary() == first.summary()


def test_copied_trials_are_not_passed_on(storage):
    _past(storage, "a")
    middle = _new(storage, "b")
    middle.set_user_attr(FINGERPRINT_ATTR, BASE.as_dict())
    warm_start(middle, storage, BASE, WarmStartSettings(), SPACE)
    study = _new(storage, "c")
    plan = warm_start(study, storage, BASE, WarmStartSettings(), SPACE)
    assert [s.study_name for s in plan.seeded] == ["a"]
    assert {r.study_name: r.reason for r in plan.rejected} == {
        "b": "no COMPLETE trial with a finite value"
    }


def test_other_search_space_enqueues_clipped_params(storage):
    old_space = {
        "x": FloatDistribution(0.0, 2.0),
        "lr": FloatDistribution(1e-5, 1.0, log=True),
        "n": IntDistribution(1, 30),
        "boosting": CategoricalDistribution(["gbdt", "dart", "goss"]),
        "gone": IntDistribution(0, 5),
    }
    old = optuna.create_study(study_name="old", storage=storage, direction="maximize")
    old.set_user_attr(FINGERPRINT_ATTR, replace(BASE, search_space_version="v0").as_dict())
    rows = [
        ({"x": 1.7, "lr": 0.5, "n": 25, "boosting": "goss", "gone": 3}, 0.9),
        ({"x": 0.33, "lr": 1e-4, "n": 5, "boosting": "dart", "gone": 1}, 0.8),
        ({"x": 0.5, "lr": 0.01, "n": 4, "boosting": "gbdt", "gone": 0}, 0.1),
    ]
    old.add_trials([create_trial(params=p, distributions=old_space, value=v) for p, v in rows])

    space = {
        "x": FloatDistribution(0.0, 1.0),
        "lr": FloatDistribution(1e-3, 1e-1, log=True),
        "n": IntDistribution(2, 10, step=2),
        "boosting": CategoricalDistribution(["gbdt", "dart"]),
    }
    study = _new(storage)
    plan = warm_start(study, storage, BASE, WarmStartSettings(top_k=2), space)

    [source] = plan.seeded
    assert (source.study_name, source.method, source.copied, source.reevaluated) == (
        "old",
        "top_k_params",
        0,
        2,
    )
    assert source.reasons == ["search space v1 != v0"]
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert [t.user_attrs["warm_start_trial"] for t in waiting] == [0, 1]
    # "goss" is not a current choice: left to the sampler rather than enqueued.
    assert "boosting" not in waiting[0].system_attrs["fixed_params"]

    def objective(trial):
        for name, d in space.items():
            if isinstance(d, CategoricalDistribution):
                trial.suggest_categorical(name, d.choices)
            elif isinstance(d, IntDistribution):
                trial.suggest_int(name, d.low, d.high, step=d.step)
            else:
                trial.suggest_float(name, d.low, d.high, log=d.log)
        return 0.0

    study.optimize(objective, n_trials=2)
    first, second = (t.params for t in study.trials)
    assert first["x"] == 1.0 and first["lr"] == 0.1 and first["n"] == 10
    assert first["boosting"] in ("gbdt", "dart") and "gone" not in first
    assert second["x"] == 0.33 and second["lr"] == 1e-3 and second["boosting"] == "dart"
    assert second["n"] in (4, 6)
