"""A study's trial budget, exact however many workers share it.

Parallel workers (`hpo_study`'s trial slots, in other processes or on other machines)
run trials of one study in one RDB storage. Counting finished trials before starting
another (Optuna's `MaxTrialsCallback`, or `n_trials` per worker) overshoots when two
workers look at the same moment: both see one trial left and both start one. So the
budget is issued up front as tickets instead: the step that prepares the study queues
one WAITING trial per trial still to run (`enqueue_trial({})`: no fixed parameter,
the sampler suggests all of them when the trial starts, exactly as for a new trial),
and names those trials. A worker only ever claims one of the named WAITING trials,
moving it to RUNNING atomically (`claim`: what Optuna does for any queued trial, made
atomic on SQLite too), so a trial two workers reach at once goes to one of them; it
never creates a trial. When no named trial is left waiting, its share is done
(`BudgetSpent`), so the study ends with exactly the budget, whichever worker ran what.

Trials already queued count as tickets first, lowest number first: the warm start's
re-evaluations (run before the sampler's own suggestions, as before) and tickets that
a stopped run left. Tickets beyond the budget (a stopped run asked for more trials
than this one) stay queued, unclaimed, and are counted as `waiting`.

Optuna is imported inside functions so this module stays cheap to import.
"""

from __future__ import annotations

from collections.abc import Iterable


class BudgetSpent(Exception):
    """No trial of this run's budget is left waiting: the worker's share is done."""


def issue_tickets(study, remaining: int) -> list[int]:
    """Queue trials until `remaining` are waiting; the numbers of the first `remaining`
    waiting trials (lowest first): the trials this run may run, and no others."""
    from optuna.trial import TrialState

    if remaining <= 0:
        return []

    def waiting() -> list[int]:
        return sorted(
            t.number for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        )

    for _ in range(remaining - len(waiting())):
        study.enqueue_trial({})
    return waiting()[:remaining]


def claim(storage, trial_id: int) -> bool:
    """Move a WAITING trial to RUNNING for this worker; False when another worker took it.

    On an RDB storage this is one conditional UPDATE (`... WHERE state = 'WAITING'`, one
    row or none), atomic on SQLite and PostgreSQL alike. Optuna's own claim reads the
    row `FOR UPDATE` first, which SQLite ignores: two processes then both read WAITING
    and both run the trial (seen here: "Cannot tell a COMPLETE trial")."""
    from datetime import datetime

    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.storages import RDBStorage
    from optuna.trial import TrialState

    backend = getattr(storage, "_backend", storage)  # under Optuna's trial cache
    if isinstance(backend, RDBStorage):
        import sqlalchemy as sa
        from optuna.storages._rdb import models

        trials = models.TrialModel
        with backend.engine.begin() as connection:
            claimed = connection.execute(
                sa.update(trials)
                .where(trials.trial_id == trial_id, trials.state == TrialState.WAITING)
                .values(state=TrialState.RUNNING, datetime_start=datetime.now())
            )
        return claimed.rowcount == 1
    try:  # in-memory and journal storages claim under their own lock
        return storage.set_trial_state_values(trial_id, state=TrialState.RUNNING)
    except UpdateFinishedTrialError:
        return False


def budgeted_study(tickets: Iterable[int], **study_kwargs):
    """An `optuna.Study` (same arguments as `optuna.Study`) whose `optimize` runs only the
    trials numbered in `tickets`, each claimed atomically (`claim`), and stops with
    `BudgetSpent` when none of them is left waiting."""
    import optuna
    from optuna.trial import TrialState

    class BudgetedStudy(optuna.Study):
        # `Study.ask` (called by `optimize` for every trial) takes a queued trial through
        # this method and creates a new one only when it returns None. Overriding it (and
        # reading Optuna's trials table in `claim`) are the hooks into Optuna's internals:
        # tests/unit/test_study_budget.py races workers on them, so an Optuna change that
        # bypasses them fails there.
        def _pop_waiting_trial_id(self) -> int | None:
            for trial in self._storage.get_all_trials(
                self._study_id, deepcopy=False, states=(TrialState.WAITING,)
            ):
                if trial.number in self._tickets and claim(self._storage, trial._trial_id):
                    return trial._trial_id
            raise BudgetSpent

    study = BudgetedStudy(**study_kwargs)
    study._tickets = frozenset(tickets)
    return study
