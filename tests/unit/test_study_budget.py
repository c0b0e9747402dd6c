"""A study's trial budget issued as tickets: workers racing on one SQLite study run
exactly the ticketed trials, each once, and never create one; queued trials count as
tickets first; tickets beyond the budget stay queued, unclaimed."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from e2i_platform.training.study_budget import BudgetSpent, budgeted_study, issue_tickets


def _objective(trial) -> float:
    trial.set_user_attr("pid", os.getpid())
    x = trial.suggest_float("x", -1, 1)
    time.sleep(0.02)
    return x * x


def _worker(url: str, name: str, tickets: list[int], barrier) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = budgeted_study(tickets, study_name=name, storage=url)
    barrier.wait(timeout=60)
    with contextlib.suppress(BudgetSpent):  # every ticket claimed: this worker is done
        study.optimize(_objective)


def _study(tmp_path: Path, name: str = "budget"):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    return url, optuna.create_study(study_name=name, storage=url)


def test_queued_trials_are_tickets_first_and_tickets_are_not_issued_twice(tmp_path):
    _, study = _study(tmp_path)
    study.enqueue_trial({"x": 0.5})
    study.enqueue_trial({"x": -0.5})
    tickets = issue_tickets(study, 5)
    assert tickets == [0, 1, 2, 3, 4]
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    assert [t.system_attrs["fixed_params"] for t in waiting[:2]] == [{"x": 0.5}, {"x": -0.5}]
    # A second prepare (a resumed run) finds them queued and queues nothing more.
    assert issue_tickets(study, 3) == [0, 1, 2]
    assert len(study.get_trials(deepcopy=False)) == 5
    assert issue_tickets(study, 0) == []


def test_racing_workers_run_exactly_the_ticketed_trials(tmp_path):
    url, study = _study(tmp_path)
    tickets = issue_tickets(study, 24)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(3)
    workers = [
        ctx.Process(target=_worker, args=(url, "budget", tickets, barrier)) for _ in range(3)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
        assert w.exitcode == 0
    trials = study.get_trials(deepcopy=False)
    assert [t.number for t in trials] == tickets  # no trial created beyond the tickets
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert len({t.user_attrs["pid"] for t in trials}) >= 2  # shared, not one worker's


def test_tickets_beyond_the_budget_stay_queued(tmp_path):
    url, study = _study(tmp_path)
    issue_tickets(study, 6)  # a stopped run's tickets
    tickets = issue_tickets(study, 3)  # this run asks for fewer
    with pytest.raises(BudgetSpent):
        budgeted_study(tickets, study_name="budget", storage=url).optimize(_objective)
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert states == [TrialState.COMPLETE] * 3 + [TrialState.WAITING] * 3
