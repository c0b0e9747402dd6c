"""`hpo_study` fanned out to two trial slots by the multiprocess executor, on a real
Dagster instance: one Optuna study (SQLite under the test's E2I_HOME) gets exactly its
trial budget whichever slot ran what, both slot steps ran trials, the pruner prunes, a
second (force_new) study is warm started with PRUNED copies, every trial measured is a
nested MLflow run under its study's run, and the record agrees with Optuna's
`best_trial`.

The upstream chain (generator to training_dataset, with its gates) runs in process at
1,500 patients; only hpo_study runs multiprocess (each step a child process,
as in the UI, the schedules and on Celery workers).
"""

from __future__ import annotations

import json
from multiprocessing import forkserver
from pathlib import Path

import dagster as dg
import optuna
import pytest
from optuna.trial import TrialState

from e2i_platform.settings import load_settings
from e2i_platform.training.study import WORKER_ATTR
from e2i_platform.training.warm_start import COPIED_FROM, COPY_MARK

from support import definitions, edit_yaml, failed_steps, latest_metadata, run

TRIALS = 12

# MLflow's own SQLAlchemy mapper setup, not ours.
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")


def hpo_job():
    """The main job, reconstructable by file: the step processes load it from there."""
    from dagster._core.definitions.reconstruct import ReconstructableJob

    return ReconstructableJob.for_file(str(Path(__file__).with_name("hpo_job.py")), "main_job")


@pytest.fixture
def own_fork_server():
    """The job's own executor config (as the UI launches it) forks its steps from a fork
    server, which keeps the environment of the moment it started: this test's E2I_HOME.
    A run worker is one process per run; a test session is not, so the server is this
    test's alone, started fresh and stopped after it."""
    from multiprocessing import forkserver

    forkserver._forkserver._stop()
    yield
    forkserver._forkserver._stop()


def _materialize_hpo(instance, run_mode: str | None = None) -> dg.ExecutionResult:
    config: dict = {}  # the job's default executor config: what the UI and schedules run
    if run_mode:
        config["ops"] = {"hpo_study": {"config": {"run_mode": run_mode}}}
    result = dg.execute_job(
        hpo_job(),
        instance=instance,
        asset_selection=[dg.AssetKey("hpo_study")],
        run_config=config,
        raise_on_error=False,
    )
    assert result.success, failed_steps(result)
    # Its steps were forked from this test's fork server (stopped before the test).
    assert forkserver._forkserver._forkserver_pid is not None
    return result


def _assert_one_study_two_slots(instance, home: Path, result, url: str) -> dict:
    meta = latest_metadata(instance, "hpo_study")
    record = json.loads((home / "warehouse" / "hpo_study.json").read_text())
    assert meta["study"] == record["study_name"]
    study = optuna.load_study(study_name=record["study_name"], storage=url)
    trials = study.get_trials(deepcopy=False)
    measured = [t for t in trials if COPIED_FROM not in t.user_attrs]

    # Exactly the budget, nothing left queued or running.
    assert all(t.state.is_finished() for t in trials)
    assert len(measured) == TRIALS == record["trials_run_now"]
    assert sum(1 for t in measured if t.state in (TrialState.COMPLETE, TrialState.PRUNED)) == TRIALS

    # Both slot steps ran trials, each in its own process.
    slot_steps = {
        e.step_key
        for e in result.all_events
        if e.is_step_success and e.step_key.startswith("hpo_study.trial_slot[")
    }
    assert slot_steps == {"hpo_study.trial_slot[slot_0]", "hpo_study.trial_slot[slot_1]"}
    ran_by = {t.user_attrs[WORKER_ATTR]["slot"] for t in measured}
    pids = {t.user_attrs[WORKER_ATTR]["pid"] for t in measured}
    assert ran_by == slot_steps and len(pids) == 2
    workers = meta["workers"]
    assert workers["slots"] == 2 == workers["configured"]
    assert sum(s["trials"] for s in workers["per_slot"]) == TRIALS
    # No slot died: no ticket was replaced (the metadata says so, and would name them).
    assert meta["replaced_tickets"] == record["replaced_tickets"] == []

    # The pruner stopped trials at its rounds (Hyperband, reported at rounds).
    pruned = [t for t in measured if t.state == TrialState.PRUNED]
    assert pruned and meta["pruned"] == len(pruned)
    assert all(t.user_attrs["pruned_at_round"] == 40 for t in pruned)

    # The record, its metadata and Optuna name the same best trial.
    assert record["best_trial"] == study.best_trial.number == meta["optuna_best_trial"]
    assert record["best_valid_auc"] == study.best_value == meta["best_valid_auc"]
    assert record["best_params"] == study.best_trial.params
    assert meta["step_seconds"] > 0 and meta["trials_run_now"] == TRIALS
    return record


def _assert_trials_nested_in_mlflow(settings, record: dict) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(settings.under_home(settings.mlflow.tracking_uri))
    parent = client.get_run(record["mlflow"]["study_run_id"])
    assert parent.info.status == "FINISHED"
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
    )
    assert len(children) == TRIALS == record["mlflow"]["trial_runs_logged_now"]
    assert {r.data.tags["optuna.state"] for r in children} <= {"COMPLETE", "PRUNED"}


def test_two_slots_share_one_study_with_an_exact_budget_and_a_warm_start(
    config_copy, e2i_home, instance, monkeypatch, own_fork_server
):
    # At the suite's 300 patients the validation split is ranked perfectly (AUC 1.0 for
    # every trial: nothing to prune) and a trial takes milliseconds.
    monkeypatch.setenv("E2I_PATIENTS", "1500")
    monkeypatch.setenv("E2I_HCPS", "100")
    monkeypatch.setenv("E2I_HPO_TRIALS", str(TRIALS))
    monkeypatch.setenv("E2I_HPO_WORKERS", "2")
    # Trials long enough (about 0.5 s) for both slots to claim some, and one Hyperband
    # bracket (120 / 40 < 4) deciding at round 40, so every trial is compared with
    # those before it there: a trial below the best so far is pruned.
    edit_yaml(config_copy, "optuna_config", ("max_boost_rounds",), 120)
    edit_yaml(config_copy, "optuna_config", ("early_stopping_rounds",), 120)
    edit_yaml(config_copy, "optuna_config", ("pruner", "min_resource"), 40)
    edit_yaml(config_copy, "optuna_config", ("pruner", "reduction_factor"), 4)
    settings = load_settings()
    assert settings.optuna.parallel_workers == 2
    url = settings.under_home(settings.optuna.storage)

    defs = definitions(settings)
    upstream = dg.AssetSelection.assets("hpo_study").upstream() - dg.AssetSelection.assets(
        "hpo_study"
    )
    prepared = run(defs, instance, selection=upstream)
    assert prepared.success, failed_steps(prepared)

    first = _assert_one_study_two_slots(instance, e2i_home, _materialize_hpo(instance), url)
    assert first["decision"] == "new" and first["warm_start"]["mode"] == "cold"
    _assert_trials_nested_in_mlflow(settings, first)

    # A new study of the same data is warm started from the first one: its copies are
    # PRUNED (never ranked as best) and are not part of this study's budget.
    second = _assert_one_study_two_slots(
        instance, e2i_home, _materialize_hpo(instance, "force_new"), url
    )
    assert second["study_name"] == f"{first['study_name']}.2"
    assert second["warm_start"]["mode"] == "warm"
    study = optuna.load_study(study_name=second["study_name"], storage=url)
    copies = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get(COPY_MARK)]
    assert len(copies) == second["warm_start"]["seed_trials"] == second["trials"]["warm_start_copy"]
    assert copies and all(t.state == TrialState.PRUNED for t in copies)
    assert COPY_MARK not in study.best_trial.user_attrs
    _assert_trials_nested_in_mlflow(settings, second)

    # Unchanged data and settings: the complete study is reused, no slot runs.
    third = _materialize_hpo(instance)
    assert latest_metadata(instance, "hpo_study")["decision"] == "reused"
    assert not [e for e in third.all_events if (e.step_key or "").startswith("hpo_study.trial")]
