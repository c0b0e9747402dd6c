"""A study's trial budget issued as tickets: workers racing on one SQLite study run
exactly the ticketed trials, each once, and never create one; queued trials count as
tickets first; tickets beyond the budget stay queued, unclaimed. A ticket whose slot
died (SIGKILLed mid-trial, or stopped by an error) is replaced exactly once, by a slot
of the same run, even with slots racing for it; a live slot's ticket never is."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from e2i_platform.training.study_budget import (
    EVALUATION_ERROR,
    REPLACED_BY,
    REPLACES,
    STALE_HEARTBEAT,
    STOPPED_BY_ERROR,
    BudgetSpent,
    budgeted_study,
    claim,
    issue_tickets,
    replace,
    replaced_tickets,
)
from e2i_platform.training.study_storage import STALE_ATTR_PREFIX


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


# --- A slot that dies: its ticket is replaced, once, and the budget stays exact. -------
#
# Heartbeats every second, a RUNNING trial silent for more than 2 s is stale (the
# platform's default is 30 s / 120 s).
INTERVAL_S, GRACE_S = 1, 2


def _storage(url: str):
    from e2i_platform.training.study_storage import StaleTrials, ensure_storage

    return ensure_storage(url, INTERVAL_S, GRACE_S, StaleTrials(GRACE_S))


def _slot(url: str, name: str, tickets: list[int], label: str, barrier, results) -> None:
    """A live slot: runs the run's tickets (and replacements) until none is left."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = budgeted_study(
        tickets,
        label=label,
        deadline=time.time() + 60,
        poll_s=0.1,
        study_name=name,
        storage=_storage(url),
    )
    barrier.wait(timeout=60)
    with contextlib.suppress(BudgetSpent):
        study.optimize(_objective)
    results.put((label, study.replaced))


def _doomed(url: str, name: str, tickets: list[int], started) -> None:
    """A slot killed mid-trial: its trial hangs until the test SIGKILLs the process."""
    study = budgeted_study(tickets, label="doomed", study_name=name, storage=_storage(url))

    def hang(trial) -> float:
        trial.set_user_attr("pid", os.getpid())
        started.set()
        time.sleep(600)
        return 0.0

    study.optimize(hang)


def _kill_mid_trial(ctx, url: str, tickets: list[int]) -> int:
    """Start a slot, SIGKILL it while its trial runs; the number of the trial it left."""
    started = ctx.Event()
    doomed = ctx.Process(target=_doomed, args=(url, "budget", tickets, started))
    doomed.start()
    assert started.wait(timeout=60), "the doomed slot never started its trial"
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.join(timeout=30)
    assert doomed.exitcode == -signal.SIGKILL
    study = optuna.load_study(study_name="budget", storage=url)
    [left] = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    return left.number


def _race(ctx, n: int, target, args) -> dict:
    """`n` processes started together (a barrier), each `target(*args(i), barrier,
    results)` putting one (label, value) pair: the values by label."""
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args(i), barrier, results)) for i in range(n)]
    for p in procs:
        p.start()
    done = dict(results.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return done


def _run_slots(ctx, url: str, tickets: list[int], n: int) -> dict[str, list[dict]]:
    return _race(ctx, n, _slot, lambda i: (url, "budget", tickets, f"slot_{i}"))


def test_a_ticket_of_a_killed_slot_is_replaced_once_and_the_budget_is_exact(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="budget", storage=_storage(url))
    tickets = issue_tickets(study, 6)
    ctx = multiprocessing.get_context("spawn")
    dead = _kill_mid_trial(ctx, url, tickets)

    # Two live slots run the other tickets, then both wait for the dead one to go
    # stale (its heartbeat stopped at the kill) and race to replace it.
    replaced_by = _run_slots(ctx, url, tickets, 2)

    trials = study.get_trials(deepcopy=False)
    by_number = {t.number: t for t in trials}
    assert by_number[dead].state == TrialState.FAIL
    assert len(trials) == len(tickets) + 1  # one replacement, no other trial
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == len(tickets)  # exactly the budget
    assert all(t.state.is_finished() for t in trials)
    [replacement] = [t for t in trials if t.number not in tickets]
    assert replacement.state == TrialState.COMPLETE
    assert replacement.user_attrs[REPLACES]["ticket"] == dead
    assert by_number[dead].user_attrs[REPLACED_BY]["replacement"] == replacement.number
    # The heartbeat check failed it (recorded on the study, as for any stale trial).
    assert f"{STALE_ATTR_PREFIX}{dead}" in study.user_attrs
    # Exactly one slot replaced it, and says so; the record reads the same from Optuna.
    made = [(label, r) for label, rs in replaced_by.items() for r in rs]
    assert len(made) == 1
    label, entry = made[0]
    assert entry == {"ticket": dead, "why": STALE_HEARTBEAT, "replacement": replacement.number}
    assert replaced_tickets(trials, tickets) == [entry | {"by": label}]
    assert replacement.user_attrs["pid"] != by_number[dead].user_attrs["pid"]


def _replacer(url: str, dead: int, label: str, barrier, results) -> None:
    storage = _storage(url)
    study = optuna.load_study(study_name="budget", storage=storage)
    trial = study.trials[dead]
    barrier.wait(timeout=60)
    results.put((label, replace(storage, study._study_id, trial, STOPPED_BY_ERROR, label)))


@pytest.mark.parametrize("racers", [4])
def test_racing_slots_replace_a_dead_ticket_exactly_once(tmp_path, racers):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="budget", storage=url)
    study.enqueue_trial({"x": 0.25})
    [ticket] = issue_tickets(study, 1)
    trial = study.ask()
    assert trial.number == ticket
    study.tell(trial, state=TrialState.FAIL)

    ctx = multiprocessing.get_context("spawn")
    made = _race(ctx, racers, _replacer, lambda i: (url, ticket, f"r{i}"))
    winners = {label: r for label, r in made.items() if r is not None}
    assert len(winners) == 1, made
    [(label, (_, number))] = winners.items()
    trials = study.get_trials(deepcopy=False)
    assert [t.number for t in trials] == [ticket, number]
    replacement = trials[1]
    assert replacement.state == TrialState.RUNNING  # already the winner's, nobody claims it
    assert replacement.system_attrs["fixed_params"] == {"x": 0.25}  # re-evaluated as queued
    assert replaced_tickets(trials, [ticket]) == [
        {"ticket": ticket, "why": STOPPED_BY_ERROR, "replacement": number, "by": label}
    ]


def _slow_live_slot(url: str, name: str, tickets: list[int], started) -> None:
    """A live slot whose one trial outlasts the grace period (its heartbeat stays fresh)."""
    study = budgeted_study(tickets, study_name=name, storage=_storage(url))

    def slow(trial) -> float:
        started.set()
        time.sleep(3 * GRACE_S)
        return 1.0

    with contextlib.suppress(BudgetSpent):
        study.optimize(slow, n_trials=1)


def test_a_running_ticket_with_a_fresh_heartbeat_is_never_replaced(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="budget", storage=_storage(url))
    tickets = issue_tickets(study, 3)
    ctx = multiprocessing.get_context("spawn")
    started = ctx.Event()
    slow = ctx.Process(target=_slow_live_slot, args=(url, "budget", tickets, started))
    slow.start()
    assert started.wait(timeout=60)

    # This slot runs the other two tickets, then waits for the slow one (running three
    # times the grace period, its heartbeat fresh): it never replaces it.
    began = time.monotonic()
    slot = budgeted_study(
        tickets, poll_s=0.1, deadline=time.time() + 60, study_name="budget", storage=_storage(url)
    )
    with pytest.raises(BudgetSpent):
        slot.optimize(_objective)
    waited = time.monotonic() - began
    slow.join(timeout=60)
    assert slow.exitcode == 0

    assert slot.replaced == []
    trials = study.get_trials(deepcopy=False)
    assert [t.number for t in trials] == tickets
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert not [t for t in trials if REPLACES in t.user_attrs or REPLACED_BY in t.user_attrs]
    assert waited > GRACE_S  # it waited for the live trial, past the grace period


def test_a_slot_killed_before_its_first_heartbeat_leaves_a_ticket_that_is_replaced(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    storage = _storage(url)
    study = optuna.create_study(study_name="budget", storage=storage)
    tickets = issue_tickets(study, 2)
    # A slot claimed ticket 0 and died before Optuna's heartbeat thread wrote anything:
    # the claim itself recorded a heartbeat, so the ticket goes stale all the same.
    assert claim(storage, study.trials[0]._trial_id)
    time.sleep(GRACE_S + 1.5)
    slot = budgeted_study(
        tickets, poll_s=0.1, deadline=time.time() + 30, study_name="budget", storage=storage
    )
    with pytest.raises(BudgetSpent):
        slot.optimize(_objective)
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert states == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert [r["ticket"] for r in slot.replaced] == [0]


def _flaky_objective(trial) -> float:
    x = trial.suggest_float("x", -1, 1)
    if trial.number == 0:
        raise ValueError("these parameters cannot be evaluated")
    if trial.number == 1:
        raise RuntimeError("the platform failed (not the parameters)")
    return x * x


def test_an_evaluation_error_spends_its_ticket_and_an_error_that_stops_a_slot_does_not(
    tmp_path,
):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="budget", storage=url)
    tickets = issue_tickets(study, 4)

    def slot():
        return budgeted_study(tickets, study_name="budget", storage=url, label="s")

    first = slot()
    # An error optimize is told to catch (a trial's parameters: `TRIAL_ERRORS`) is the
    # trial's result, as before: FAIL, counted, the slot goes on. Any other error stops
    # the slot, as before, leaving its ticket FAIL without a result.
    with pytest.raises(RuntimeError, match="the platform failed"):
        first.optimize(_flaky_objective, catch=(ValueError,))
    # The slot that ran next (another one, or this one retried) replaces that ticket.
    second = slot()
    with pytest.raises(BudgetSpent):
        second.optimize(_flaky_objective, catch=(ValueError,))

    trials = study.get_trials(deepcopy=False)
    states = [t.state for t in trials]
    assert states == [TrialState.FAIL, TrialState.FAIL] + [TrialState.COMPLETE] * 3
    assert "ValueError" in trials[0].user_attrs[EVALUATION_ERROR]
    assert second.replaced == [{"ticket": 1, "why": STOPPED_BY_ERROR, "replacement": 4}]
    assert replaced_tickets(trials, tickets)[0]["ticket"] == 1
    # The budget: 4 tickets, one spent by its parameters' error, three evaluated.
    assert len([t for t in trials if t.state == TrialState.COMPLETE]) == len(tickets) - 1


def _always_stops(trial) -> float:
    trial.suggest_float("x", -1.0, 1.0)
    raise RuntimeError("the platform failed (every time)")


def test_a_replacement_that_dies_too_is_not_replaced_again(tmp_path):
    """Parameters that stop their slot every time (or an objective that fails them every
    time) cost one replacement, not an endless chain: the replacement's own death is
    final, and the slot's share ends."""
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="budget", storage=url)
    tickets = issue_tickets(study, 1)

    def slot():
        return budgeted_study(tickets, study_name="budget", storage=url, label="s")

    with pytest.raises(RuntimeError, match="every time"):
        slot().optimize(_always_stops)  # the ticket dies
    with pytest.raises(RuntimeError, match="every time"):
        slot().optimize(_always_stops)  # its replacement dies too
    third = slot()
    with pytest.raises(BudgetSpent):
        third.optimize(_always_stops)
    assert third.replaced == []
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL]
    assert [r["ticket"] for r in replaced_tickets(trials, tickets)] == [tickets[0]]
