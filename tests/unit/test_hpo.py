"""The search itself: the pruner really prunes on per-round AUC, reporting only at its
decision rounds changes nothing, best-trial selection skips failed, pruned and NaN
trials and breaks ties as Optuna's own `best_trial` does."""

import numpy as np
import optuna
import pandas as pd
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from e2i_platform.settings import load_settings
from e2i_platform.training.hpo import Objective, best_trial, search_space
from e2i_platform.training.model_data import ModelData
from e2i_platform.training.study_setup import make_pruner, make_sampler, pruning_rounds


def _data(seed: int = 0) -> ModelData:
    rng = np.random.default_rng(seed)
    X = {
        s: pd.DataFrame(rng.normal(size=(n, 5)), columns=[f"f{i}" for i in range(5)])
        for s, n in (("train", 2000), ("validation", 800), ("test", 10))
    }
    y = {
        s: pd.Series((x["f0"] - x["f2"] + rng.normal(size=len(x)) > 1).astype(int))
        for s, x in X.items()
    }
    return ModelData(list(X["train"].columns), [], {}, X, y, {})


def test_hyperband_prunes_trials_reporting_every_round(e2i_home):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = load_settings().optuna.model_copy(update={"max_boost_rounds": 150})
    study = optuna.create_study(
        direction="maximize", sampler=make_sampler(cfg), pruner=make_pruner(cfg)
    )
    study.optimize(Objective(_data(), search_space(), 7, cfg.max_boost_rounds, None), n_trials=16)
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert pruned, "Hyperband never pruned"
    # Pruned trials stopped early; complete ones reported every round they boosted.
    assert all(t.user_attrs["pruned_at_round"] < cfg.max_boost_rounds for t in pruned)
    assert all(len(t.intermediate_values) == cfg.max_boost_rounds for t in complete)
    best = best_trial(study)
    assert best.value == max(t.value for t in complete)


def test_reporting_only_at_the_pruners_rounds_is_the_same_search(e2i_home):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = load_settings().optuna.model_copy(update={"max_boost_rounds": 150})
    rungs = pruning_rounds(cfg)
    assert rungs == {10, 30, 90}  # min_resource 10, reduction factor 3, up to 150 rounds
    studies, curves = {}, {}
    for every_round in (True, False):
        # One name: Hyperband assigns a trial's bracket from the study name and number.
        study = optuna.create_study(
            study_name="same-search",
            direction="maximize",
            sampler=make_sampler(cfg),
            pruner=make_pruner(cfg),
        )
        run = Objective(
            _data(), search_space(), 7, cfg.max_boost_rounds, None, None if every_round else rungs
        )
        study.optimize(run, n_trials=16)
        studies[every_round], curves[every_round] = study.trials, run.curves

    def outcome(trials):
        return [(t.state, t.params, t.value, t.user_attrs) for t in trials]

    every, at_rungs = studies[True], studies[False]
    assert any(t.state == TrialState.PRUNED for t in every)
    assert outcome(at_rungs) == outcome(every)
    # Fewer storage writes, each at a decision round; every round is still measured.
    assert all(set(t.intermediate_values) <= rungs for t in at_rungs)
    assert (
        sum(map(len, (t.intermediate_values for t in at_rungs)))
        < sum(map(len, (t.intermediate_values for t in every))) / 5
    )
    assert curves[False] == curves[True]
    assert [len(curves[False][t.number]) for t in every] == [
        len(t.intermediate_values) for t in every
    ]


def _trial(number_value, state=TrialState.COMPLETE, rounds=None):
    attrs = {"best_iteration": rounds} if rounds is not None else {}
    return create_trial(
        state=state,
        value=number_value if state == TrialState.COMPLETE else None,
        params={"x": 0.5},
        distributions={"x": FloatDistribution(0, 1)},
        user_attrs=attrs,
        intermediate_values={1: 0.99} if state == TrialState.PRUNED else {},
    )


def test_best_trial_ignores_failed_pruned_and_nan_and_breaks_ties_as_optuna_does(tmp_path):
    trials = [
        _trial(None, TrialState.FAIL),  # 0
        _trial(None, TrialState.PRUNED),  # 1 (its 0.99 was an intermediate value)
        _trial(0.80, rounds=120),  # 2: the first to reach the best value -> best
        _trial(0.80, rounds=40),  # 3: same AUC, later
        _trial(0.80, rounds=40),  # 4
        _trial(0.70, rounds=10),  # 5
    ]
    for storage in (None, f"sqlite:///{tmp_path / 'optuna.db'}"):
        study = optuna.create_study(direction="maximize", storage=storage)
        study.add_trials(trials)
        # The platform's best is Optuna's own, so optuna-dashboard shows the same trial.
        assert best_trial(study).number == study.best_trial.number == 2
    nan_only = optuna.create_study(direction="maximize")
    nan_only.add_trial(_trial(None, TrialState.FAIL))
    assert best_trial(nan_only) is None
