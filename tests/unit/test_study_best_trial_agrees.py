"""The platform, Optuna and MLflow tell the same story about a warm-started study: on real
SQLite storage, `optuna.load_study(...).best_trial` (what optuna-dashboard shows) is the
platform's recorded best trial even though the copied warm-start trials carry higher
values (measured on an easier past dataset); copies are marked and never ranked; the
metric is named; every trial measured here is a nested MLflow run under the study's
run with its params and per-round validation AUC."""

from __future__ import annotations

import shutil
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from e2i_platform.resources.mlflow import MlflowResource
from e2i_platform.settings import load_settings
from e2i_platform.training.study import run_study
from e2i_platform.training.warm_start import COPIED_FROM, COPY_MARK, COPY_VALUE, SOURCE_TRIAL

from support import synthetic_model_data

# MLflow's own SQLAlchemy mapper setup, not ours.
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")

ROUNDS = 40


def test_optuna_dashboard_and_mlflow_show_the_platforms_best_trial(
    e2i_home, tmp_path: Path, template_db: Path
):
    db = tmp_path / "mlflow.db"
    shutil.copyfile(template_db, db)
    tracking = MlflowResource(
        tracking_uri=f"sqlite:///{db}", experiment="e2i_test", registered_model="e2i_test_model"
    )
    cfg = load_settings().optuna.model_copy(update={"n_trials": 7, "max_boost_rounds": ROUNDS})
    url = f"sqlite:///{tmp_path / 'optuna.db'}"

    past = run_study(synthetic_model_data(noise=0.5, seed=1), cfg, url, "easy-v1", seed=7).record
    now = run_study(
        synthetic_model_data(noise=2.0, seed=2), cfg, url, "hard-v2", seed=7, mlflow=tracking
    ).record

    assert past["warm_start"]["mode"] == "cold" and now["warm_start"]["mode"] == "warm"
    study = optuna.load_study(study_name=now["study_name"], storage=url)
    trials = study.get_trials(deepcopy=False)
    copies = [t for t in trials if t.user_attrs.get(COPY_MARK) is True]
    measured = [t for t in trials if COPY_MARK not in t.user_attrs]
    assert len(copies) == now["warm_start"]["seed_trials"] > 0
    assert now["trials"]["warm_start_copy"] == len(copies)

    # Copies are PRUNED (never ranked as best by Optuna), carry their source and value, and
    # hold that value as their one intermediate value at the last round, for TPE.
    past_study = optuna.load_study(study_name=past["study_name"], storage=url)
    for t in copies:
        source = past_study.trials[t.user_attrs[SOURCE_TRIAL]]
        assert t.state == TrialState.PRUNED and t.value is None
        assert t.user_attrs[COPIED_FROM] == past["study_name"]
        assert t.user_attrs[COPY_VALUE] == source.value
        assert t.intermediate_values == {ROUNDS: source.value}
        assert t.params == source.params

    # The copies out-score every trial measured on the harder data, yet the best trial is
    # a measured one, and Optuna (so optuna-dashboard) names the same trial.
    best_measured = max(t.value for t in measured if t.state == TrialState.COMPLETE)
    assert max(t.user_attrs[COPY_VALUE] for t in copies) > best_measured
    assert now["best_valid_auc"] == best_measured
    assert study.best_trial.number == now["best_trial"] == now["optuna_best_trial"]
    assert COPY_MARK not in study.best_trial.user_attrs
    assert study.metric_names == ["valid_auc"] == now["metric_names"]

    # MLflow: one nested run per trial measured here (copies were measured elsewhere),
    # each with its params and the validation AUC of every boosting round.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking.tracking_uri)
    parent = client.get_run(now["mlflow"]["study_run_id"])
    assert parent.data.metrics["best_valid_auc"] == now["best_valid_auc"]
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert len(children) == len(measured) == now["mlflow"]["trial_runs_logged_now"] == 7
    by_number = {int(r.data.tags["optuna.trial_number"]): r for r in children}
    for t in measured:
        run = by_number[t.number]
        assert run.data.tags["optuna.state"] == t.state.name
        assert run.data.params == {k: str(v) for k, v in t.params.items()}
        history = client.get_metric_history(run.info.run_id, "valid_auc")
        steps = sorted({m.step for m in history})  # the final value repeats the last step
        assert steps == list(range(1, len(steps) + 1))  # every round, from the first
        if t.state == TrialState.PRUNED:
            assert len(steps) == t.user_attrs["pruned_at_round"]
        else:
            assert len(steps) >= max(t.intermediate_values, default=1)
