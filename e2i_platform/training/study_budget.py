"""A study's trial budget, exact however many workers share it, and whichever of them dies.

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
never creates a trial except to replace a dead ticket (below). When none of the run's
tickets is left waiting, running or dead, its share is done (`BudgetSpent`), so the
study ends with exactly the budget, whichever worker ran what.

Trials already queued count as tickets first, lowest number first: the warm start's
re-evaluations (run before the sampler's own suggestions, as before) and tickets that
a stopped run left. Tickets beyond the budget (a stopped run asked for more trials
than this one) stay queued, unclaimed, and are counted as `waiting`.

A worker can die mid-trial (its process killed: a Celery worker lost, out of memory).
Its ticket stays RUNNING until the storage's heartbeat check fails it (no heartbeat for
longer than the grace period: Optuna's `fail_stale_trials`); a claim records the
trial's first heartbeat at once, so a worker dying right after its claim is caught
too. A ticket is dead when its trial is FAIL without a result of its own: failed by
the heartbeat check, or by an error that stopped its worker. A FAIL that the
objective's own error made (an exception `optimize` was told to `catch`: the trial's
parameters, not the platform) is the trial's result and spends its ticket, as it
always did; such a trial carries `EVALUATION_ERROR`. A RUNNING ticket is never dead:
while its heartbeat is fresh its worker is alive, and it finishes there.

A worker that finds none of the run's tickets waiting replaces a dead one (`replace`):
in one transaction it marks the dead trial `REPLACED_BY` (a user attribute, unique per
trial: a second worker replacing the same ticket fails on it and replaces nothing)
and creates the replacement, already RUNNING for itself, with a heartbeat, naming the
ticket it replaces (`REPLACES`) and keeping its fixed parameters (a warm-start
re-evaluation is re-evaluated). The replacement is a ticket of the run like the one
it replaces (and is replaced in turn if its worker dies). While a ticket of the run is
still RUNNING elsewhere a worker with nothing to do waits (polling), since that trial's
worker may yet die with nobody else left to replace it; it stops waiting at the run's
deadline. Without heartbeats (an RDB storage opened without them) a dead RUNNING trial
is never failed, so nobody waits for one.

Optuna is imported inside functions so this module stays cheap to import.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

_log = logging.getLogger(__name__)

# User attributes: on a dead ticket, its replacement; on a replacement, the ticket it
# replaces; on a FAIL trial whose objective raised an error `optimize` catches, the error.
REPLACED_BY = "ticket_replaced_by"
REPLACES = "replaces_ticket"
EVALUATION_ERROR = "evaluation_error"
STOPPED_BY = "stopped_by_error"  # on a FAIL trial whose error stopped its worker

STALE_HEARTBEAT = "stale heartbeat (trial failed)"
STOPPED_BY_ERROR = "failed without a result (an error stopped its worker)"


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


def _rdb(storage):
    from optuna.storages import RDBStorage

    backend = getattr(storage, "_backend", storage)  # under Optuna's trial cache
    return backend if isinstance(backend, RDBStorage) else None


def claim(storage, trial_id: int) -> bool:
    """Move a WAITING trial to RUNNING for this worker; False when another worker took it.

    On an RDB storage this is one conditional UPDATE (`... WHERE state = 'WAITING'`, one
    row or none), atomic on SQLite and PostgreSQL alike. Optuna's own claim reads the
    row `FOR UPDATE` first, which SQLite ignores: two processes then both read WAITING
    and both run the trial (seen here: "Cannot tell a COMPLETE trial"). With heartbeats
    the same transaction records the trial's first heartbeat: a worker killed before
    its heartbeat thread starts leaves a trial the heartbeat check fails all the same."""
    from datetime import datetime

    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    backend = _rdb(storage)
    if backend is not None:
        import sqlalchemy as sa
        from optuna.storages._rdb import models

        trials = models.TrialModel
        with backend.engine.begin() as connection:
            claimed = connection.execute(
                sa.update(trials)
                .where(trials.trial_id == trial_id, trials.state == TrialState.WAITING)
                .values(state=TrialState.RUNNING, datetime_start=datetime.now())
            )
            if claimed.rowcount == 1 and backend.heartbeat_interval is not None:
                connection.execute(
                    sa.insert(models.TrialHeartbeatModel).values(
                        trial_id=trial_id, heartbeat=sa.func.now()
                    )
                )
        return claimed.rowcount == 1
    try:  # in-memory and journal storages claim under their own lock
        return storage.set_trial_state_values(trial_id, state=TrialState.RUNNING)
    except UpdateFinishedTrialError:
        return False


def run_tickets(trials, tickets: Iterable[int]) -> dict:
    """The run's tickets among `trials` (a study's trials), by number: the tickets it was
    issued and, in turn, the replacements of any of them."""
    numbers = set(tickets)
    run = {}
    for t in sorted(trials, key=lambda t: t.number):  # a replacement comes after its ticket
        if t.number in numbers or (t.user_attrs.get(REPLACES) or {}).get("ticket") in numbers:
            numbers.add(t.number)
            run[t.number] = t
    return run


def replaced_tickets(trials, tickets: Iterable[int] | None = None) -> list[dict]:
    """The replaced tickets among `trials` (of the run issued `tickets`; of the whole
    study when None): ticket, why, replacement and the worker that replaced it."""
    scope = trials if tickets is None else run_tickets(trials, tickets).values()
    return sorted(
        (
            {
                "ticket": t.user_attrs[REPLACES]["ticket"],
                "why": t.user_attrs[REPLACES].get("why"),
                "replacement": t.number,
                "by": t.user_attrs[REPLACES].get("by"),
            }
            for t in scope
            if REPLACES in t.user_attrs
        ),
        key=lambda r: r["ticket"],
    )


def dead_tickets(run: dict) -> list[tuple[object, str]]:
    """The run's dead tickets (FAIL without a result of their own, not yet replaced),
    lowest first, each with why it is dead. A replacement that dies is not replaced
    again: at most one replacement per ticket, so parameters that fail every time (an
    objective that returns NaN for them, a warm-start point that kills its process)
    cost one extra trial, not an endless chain."""
    from optuna.trial import TrialState

    replaced = {(t.user_attrs.get(REPLACES) or {}).get("ticket") for t in run.values()}
    dead = [
        t
        for n, t in sorted(run.items())
        if t.state == TrialState.FAIL and EVALUATION_ERROR not in t.user_attrs
        if n not in replaced and REPLACED_BY not in t.user_attrs and REPLACES not in t.user_attrs
    ]
    if not dead:
        return []
    # An error that stopped a worker is marked on its trial; a FAIL without the mark is
    # a process that died, failed by the heartbeat check (whichever worker ran the check:
    # the study's record of it may not be written yet).
    return [(t, STOPPED_BY_ERROR if STOPPED_BY in t.user_attrs else STALE_HEARTBEAT) for t in dead]


def replace(
    storage, study_id: int, dead, why: str, by: str | None = None
) -> tuple[int, int] | None:
    """Replace the dead ticket `dead` (a FrozenTrial) with a new trial, RUNNING for this
    worker: its (trial id, number); None when another worker replaced it first.

    One transaction: the dead trial's `REPLACED_BY` attribute first (unique per trial:
    of two workers replacing one ticket at once, the second fails there and creates
    nothing), then the replacement (as Optuna creates a trial, the study's row locked
    for its number), with the dead ticket's fixed parameters, `REPLACES` and, with
    heartbeats, its first heartbeat."""
    import json
    from datetime import datetime

    import sqlalchemy as sa
    from optuna.storages._rdb import models
    from optuna.trial import FrozenTrial, TrialState
    from sqlalchemy import exc, orm

    backend = _rdb(storage)
    if backend is None:
        return None  # dead tickets are an RDB storage's (other processes, heartbeats)
    note = {"ticket": dead.number, "why": why, "by": by}
    fixed = dead.system_attrs.get("fixed_params")
    template = FrozenTrial(
        number=-1,
        state=TrialState.RUNNING,
        value=None,
        datetime_start=datetime.now(),
        datetime_complete=None,
        params={},
        distributions={},
        user_attrs={REPLACES: note},
        system_attrs={"fixed_params": fixed} if fixed is not None else {},
        intermediate_values={},
        trial_id=-1,
    )
    try:
        with orm.Session(backend.engine) as session, session.begin():
            # First statement of the transaction: on SQLite it takes the write lock (a
            # second worker waits for it here, then fails on the unique key).
            mark = models.TrialUserAttributeModel(
                trial_id=dead._trial_id, key=REPLACED_BY, value_json=json.dumps(note)
            )
            session.add(mark)
            session.flush()
            models.StudyModel.find_or_raise_by_id(study_id, session, for_update=True)
            trial = backend._get_prepared_new_trial(study_id, template, session)
            mark.value_json = json.dumps({"replacement": trial.number, "why": why, "by": by})
            if backend.heartbeat_interval is not None:
                session.execute(
                    sa.insert(models.TrialHeartbeatModel).values(
                        trial_id=trial.trial_id, heartbeat=sa.func.now()
                    )
                )
            replacement = (trial.trial_id, trial.number)
    except exc.IntegrityError:
        return None  # another worker replaced it
    return replacement


def budgeted_study(
    tickets: Iterable[int],
    *,
    label: str | None = None,
    deadline: float | None = None,
    poll_s: float = 1.0,
    **study_kwargs,
):
    """An `optuna.Study` (same arguments as `optuna.Study`) whose `optimize` runs only the
    trials numbered in `tickets`, each claimed atomically (`claim`), and replacements of
    dead ones (`replace`), and stops with `BudgetSpent` when none is left to run. While
    another worker still runs one of them it waits (every `poll_s` seconds, until the
    epoch `deadline` when given). `replaced` lists what this worker replaced; `label`
    names it there."""
    import optuna
    from optuna.storages._heartbeat import is_heartbeat_enabled
    from optuna.trial import TrialState

    from e2i_platform.training.study_storage import fail_stale_trials

    class BudgetedStudy(optuna.Study):
        # `Study.ask` (called by `optimize` for every trial) takes a queued trial through
        # this method and creates a new one only when it returns None. Overriding it (and
        # reading Optuna's trials table in `claim` and `replace`) are the hooks into
        # Optuna's internals: tests/unit/test_study_budget.py races workers on them, so
        # an Optuna change that bypasses them fails there.
        def _pop_waiting_trial_id(self) -> int | None:
            while True:
                run = run_tickets(
                    self._storage.get_all_trials(self._study_id, deepcopy=False), self._tickets
                )
                for t in run.values():
                    if t.state == TrialState.WAITING and claim(self._storage, t._trial_id):
                        return t._trial_id
                heartbeats = is_heartbeat_enabled(self._storage)
                if heartbeats:
                    fail_stale_trials(self)  # a RUNNING ticket whose worker died ends FAIL
                    run = run_tickets(
                        self._storage.get_all_trials(self._study_id, deepcopy=False), self._tickets
                    )
                for dead, why in dead_tickets(run):
                    made = replace(self._storage, self._study_id, dead, why, self._label)
                    if made is None:
                        continue  # another worker replaced it
                    trial_id, number = made
                    self.replaced.append({"ticket": dead.number, "why": why, "replacement": number})
                    _log.warning(
                        "study %s: ticket %d is dead, %s: replaced by trial %d (%s)",
                        self.study_name,
                        dead.number,
                        why,
                        number,
                        self._label,
                    )
                    return trial_id
                running = [
                    t for t in run.values() if t.state in (TrialState.RUNNING, TrialState.WAITING)
                ]
                if not running or not heartbeats:
                    raise BudgetSpent
                if self._deadline is not None and time.time() >= self._deadline:
                    raise BudgetSpent
                time.sleep(self._poll_s)

        def optimize(self, func, *args, catch=(), **kwargs):
            # What `optimize` is told to catch is the trial's own result (FAIL): marked, so
            # it is never taken for a dead ticket.
            caught = tuple(catch) if isinstance(catch, Iterable) else (catch,)

            def objective(trial):
                try:
                    return func(trial)
                except caught as e:
                    trial.set_user_attr(EVALUATION_ERROR, f"{type(e).__name__}: {e}"[:500])
                    raise
                except Exception as e:
                    # Any other error stops this worker: said on the trial itself, so a
                    # worker replacing it tells it from a process that died (no mark).
                    trial.set_user_attr(STOPPED_BY, f"{type(e).__name__}: {e}"[:500])
                    raise

            return super().optimize(objective, *args, catch=caught, **kwargs)

    study = BudgetedStudy(**study_kwargs)
    study._tickets = frozenset(tickets)
    study._label = label
    study._deadline = deadline
    study._poll_s = poll_s
    study.replaced = []
    return study
