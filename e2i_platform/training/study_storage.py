"""Where a study's trials live, and what happens to a trial whose process stopped.

`ensure_storage` opens the Optuna storage (a local SQLite file gets its directory),
with heartbeats when configured: a RUNNING trial whose process stops sending them
(a crash, a kill) is failed instead of staying RUNNING forever, and `StaleTrials`
records each such failure on the study, where later runs read it
(`stale_failed_trials`) to run that trial again.

Optuna is imported inside functions so this module stays cheap to import.
"""

from __future__ import annotations

from pathlib import Path

# Study user attribute (one per trial, so parallel workers never overwrite each other)
# recording a trial failed because its process stopped sending heartbeats.
STALE_ATTR_PREFIX = "heartbeat_failed_trial_"


class StaleTrials:
    """The storage's heartbeat-stale callback: Optuna calls it for every RUNNING trial it
    fails because its process stopped sending heartbeats (a crash, a kill). It records
    the trial on the study (`heartbeat_failed_trial_<n>`, visible in optuna-dashboard
    and read by later runs) and keeps the numbers this process failed in `failed`."""

    def __init__(self, grace_s: int):
        self.grace_s = grace_s
        self.failed: list[int] = []

    def __call__(self, study, trial) -> None:
        study.set_user_attr(
            f"{STALE_ATTR_PREFIX}{trial.number}",
            {
                "reason": f"RUNNING with no heartbeat for more than {self.grace_s} s: "
                "its process stopped; failed by Optuna's heartbeat check",
                "started": trial.datetime_start.isoformat() if trial.datetime_start else None,
            },
        )
        self.failed.append(trial.number)


def stale_failed_trials(study) -> list[int]:
    """Numbers of the study's trials failed because their process stopped."""
    return sorted(
        int(k.removeprefix(STALE_ATTR_PREFIX))
        for k in study.user_attrs
        if k.startswith(STALE_ATTR_PREFIX)
    )


def ensure_storage(
    url: str,
    heartbeat_interval_s: int | None = None,
    heartbeat_grace_s: int | None = None,
    on_stale: StaleTrials | None = None,
):
    """An Optuna storage for `url`; a local SQLite file gets its directory created.

    With `heartbeat_interval_s`, every running trial's process writes a heartbeat that
    often, and a RUNNING trial silent for more than `heartbeat_grace_s` is failed (FAIL)
    when any process starts a trial of its study (`on_stale` is told), instead of
    staying RUNNING forever after a crash."""
    import warnings

    import optuna

    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    if heartbeat_interval_s is None:
        return optuna.storages.RDBStorage(url)
    grace = heartbeat_grace_s if heartbeat_grace_s is not None else 2 * heartbeat_interval_s
    if grace <= heartbeat_interval_s:
        raise ValueError(
            f"optuna heartbeat_grace_s ({grace}) must be greater than heartbeat_interval_s "
            f"({heartbeat_interval_s}): a live trial would be failed between two heartbeats"
        )
    with warnings.catch_warnings():
        # The heartbeat arguments are marked experimental; using them is deliberate.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url,
            heartbeat_interval=heartbeat_interval_s,
            grace_period=grace,
            heartbeat_stale_trial_callback=on_stale,
        )


def fail_stale_trials(study) -> None:
    """Fail the study's RUNNING trials whose heartbeat stopped (what Optuna also does
    before each new trial), so a reused study is cleaned up too."""
    import warnings

    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
