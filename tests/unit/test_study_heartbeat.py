"""A trial whose process dies mid-trial does not stay RUNNING forever: the storage's
heartbeat lets the next study run fail it (FAIL), say so in its record and on the study,
and run a trial in its place. A real search process on a SQLite file, killed with
SIGKILL while it boosts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from e2i_platform.settings import load_settings
from e2i_platform.training.model_data import ModelData
from e2i_platform.training.study import run_study
from e2i_platform.training.study_storage import STALE_ATTR_PREFIX, ensure_storage

REPO = Path(__file__).resolve().parents[2]


def data():
    """About a second per trial: 20,000 rows, every trial boosting at least 200 rounds."""
    rng = np.random.default_rng(0)
    X = {
        s: pd.DataFrame(rng.normal(size=(n, 8)), columns=[f"f{i}" for i in range(8)])
        for s, n in (("train", 20000), ("validation", 5000), ("test", 10))
    }
    y = {
        s: pd.Series((x["f0"] - x["f2"] + rng.normal(size=len(x)) > 1).astype(int))
        for s, x in X.items()
    }
    return ModelData(list(X["train"].columns), [], {}, X, y, {})


def config(n_trials: int):
    cfg = load_settings().optuna
    return cfg.model_copy(
        update={
            "n_trials": n_trials,
            "max_boost_rounds": 300,
            "early_stopping_rounds": 300,
            "heartbeat_interval_s": 1,
            "heartbeat_grace_s": 2,
            "pruner": cfg.pruner.model_copy(update={"min_resource": 200}),
        }
    )


# The search process: this module's data and config, 50 trials (it is killed long before).
SEARCH = textwrap.dedent(
    f"""
    import sys
    sys.path.insert(0, {str(Path(__file__).parent)!r})
    from test_study_heartbeat import config, data
    from e2i_platform.training.study import run_study

    run_study(data(), config(50), sys.argv[1], "dataset-v1", seed=7)
    """
)


def _running(storage) -> list:
    names = optuna.get_all_study_names(storage)
    if not names:  # the search has not created its study yet
        return []
    study = optuna.load_study(study_name=names[0], storage=storage)
    return study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))


def test_a_trial_of_a_killed_process_ends_fail_and_the_next_run_says_so(e2i_home, tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    storage = ensure_storage(url)  # the schema exists before the search opens it
    search = subprocess.Popen(
        [sys.executable, "-c", SEARCH, url],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        victim = None
        while victim is None:
            assert search.poll() is None, search.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the search never ran a second trial"
            # Mid-trial: trial 1 or later (so one trial is finished), boosting for 0.3 s.
            for t in _running(storage):
                age = (time.time() - t.datetime_start.timestamp()) if t.datetime_start else 0
                if t.number >= 1 and age > 0.3:
                    victim = t.number
            time.sleep(0.1)
        os.kill(search.pid, signal.SIGKILL)
    finally:
        if search.poll() is None:
            search.kill()
        search.communicate()
    assert search.returncode == -signal.SIGKILL

    [left] = _running(storage)
    assert left.number == victim  # killed mid-trial: RUNNING, with nobody running it
    time.sleep(3.5)  # longer than the grace period (2 s) since its last heartbeat

    # The same search (config and data: the same study), asked for fewer trials.
    target = victim + 1
    record = run_study(data(), config(50), url, "dataset-v1", seed=7, n_trials=target).record

    study = optuna.load_study(study_name=record["study_name"], storage=url)
    trials = study.get_trials(deepcopy=False)
    assert trials[victim].state == TrialState.FAIL
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert record["decision"] == "resumed"
    assert record["heartbeat"] == {
        "interval_s": 1,
        "grace_s": 2,
        "failed_now": [victim],
        "failed_trials": [victim],
    }
    note = study.user_attrs[f"{STALE_ATTR_PREFIX}{victim}"]  # visible in optuna-dashboard
    assert "no heartbeat for more than 2 s" in note["reason"]
    # The crashed trial was not evaluated: the budget is met by trials that were.
    assert record["trials"]["fail"] == 1
    assert record["trials"].get("complete", 0) + record["trials"].get("pruned", 0) == target
    assert record["trials_run_now"] == target - victim  # trials 0..victim-1 ran before

    # A later run finds nothing more to fail, and remembers what was.
    again = run_study(data(), config(50), url, "dataset-v1", seed=7, n_trials=target).record
    assert again["decision"] == "reused"
    assert again["heartbeat"]["failed_now"] == []
    assert again["heartbeat"]["failed_trials"] == [victim]


def test_heartbeat_grace_must_exceed_the_interval(e2i_home, tmp_path):
    with pytest.raises(ValueError, match=r"heartbeat_grace_s \(5\) must be greater than"):
        ensure_storage(
            f"sqlite:///{tmp_path / 'o.db'}", heartbeat_interval_s=5, heartbeat_grace_s=5
        )
    storage = ensure_storage(f"sqlite:///{tmp_path / 'o.db'}", 30, 120)
    assert (storage.heartbeat_interval, storage.grace_period) == (30, 120)
    assert load_settings().optuna.heartbeat_interval_s < load_settings().optuna.heartbeat_grace_s
