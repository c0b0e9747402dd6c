"""Parallel HPO: two worker processes share one Optuna study in the test's own
PostgreSQL database, each running the platform's LightGBM objective (with its
per-round pruning and the storage heartbeat) and seeing the other's trials. And a
warm-started study on PostgreSQL: Optuna's own best trial is the platform's."""

import subprocess
import sys
import textwrap
from pathlib import Path

import optuna

from support import synthetic_model_data

REPO = Path(__file__).resolve().parents[2]
TRIALS_PER_WORKER = 6

WORKER = textwrap.dedent(
    """
    import sys
    import numpy as np
    import optuna
    import pandas as pd

    from e2i_platform.settings import load_settings
    from e2i_platform.training.hpo import Objective, search_space
    from e2i_platform.training.model_data import ModelData
    from e2i_platform.training.study_setup import make_pruner, make_sampler
    from e2i_platform.training.study_storage import ensure_storage

    url, name, trials, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    rng = np.random.default_rng(0)  # the same data in both workers
    X = {s: pd.DataFrame(rng.normal(size=(n, 6)), columns=[f"f{i}" for i in range(6)])
         for s, n in (("train", 3000), ("validation", 1000), ("test", 10))}
    y = {s: pd.Series((x["f0"] + 0.5 * x["f1"] + rng.normal(size=len(x)) > 1).astype(int))
         for s, x in X.items()}
    data = ModelData(list(X["train"].columns), [], {}, X, y, {})
    cfg = load_settings().optuna.model_copy(update={"max_boost_rounds": 120})
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(
        study_name=name,
        storage=ensure_storage(url, cfg.heartbeat_interval_s, cfg.heartbeat_grace_s),
        sampler=make_sampler(cfg.model_copy(update={"sampler": cfg.sampler.model_copy(update={"seed": seed})})),
        pruner=make_pruner(cfg),
    )
    mine = []
    study.optimize(
        Objective(data, search_space(), 7, cfg.max_boost_rounds, 20),
        n_trials=trials,
        callbacks=[lambda s, t: mine.append(t.number)],
    )
    print("trials", *mine)
    """
)


def test_two_workers_share_one_study_on_postgres(e2i_home, psycopg2_url):
    from e2i_platform.training.study_storage import ensure_storage

    storage = ensure_storage(psycopg2_url)
    optuna.create_study(study_name="shared", storage=storage, direction="maximize")
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, psycopg2_url, "shared", str(TRIALS_PER_WORKER), str(s)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for s in (1, 2)
    ]
    outputs = [w.communicate(timeout=300) for w in workers]
    ran = []
    for w, (out, err) in zip(workers, outputs, strict=True):
        assert w.returncode == 0, err[-3000:]
        (line,) = [ln for ln in out.splitlines() if ln.startswith("trials")]
        ran.append({int(n) for n in line.split()[1:]})

    study = optuna.load_study(study_name="shared", storage=storage)
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 2 * TRIALS_PER_WORKER
    assert sorted(t.number for t in trials) == list(range(2 * TRIALS_PER_WORKER))
    assert all(t.state.is_finished() for t in trials)
    # Each worker ran its own trials of the one study; none was run twice.
    assert len(ran[0]) == len(ran[1]) == TRIALS_PER_WORKER and not ran[0] & ran[1]
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert complete and all(len(t.intermediate_values) > 5 for t in complete)


def test_warm_started_study_best_trial_agrees_with_optuna_on_postgres(e2i_home, psycopg2_url):
    from e2i_platform.settings import load_settings
    from e2i_platform.training.study import run_study

    cfg = load_settings().optuna.model_copy(update={"n_trials": 6, "max_boost_rounds": 40})
    past = run_study(synthetic_model_data(0.5, 1), cfg, psycopg2_url, "easy-v1", seed=7).record
    now = run_study(synthetic_model_data(2.0, 2), cfg, psycopg2_url, "hard-v2", seed=7).record
    assert now["warm_start"]["mode"] == "warm" and now["warm_start"]["seed_trials"] > 0

    study = optuna.load_study(study_name=now["study_name"], storage=psycopg2_url)
    copies = [t for t in study.trials if t.user_attrs.get("warm_start_copy") is True]
    assert len(copies) == now["warm_start"]["seed_trials"] == now["trials"]["warm_start_copy"]
    assert all(t.state == optuna.trial.TrialState.PRUNED for t in copies)
    assert {t.user_attrs["warm_start_from"] for t in copies} == {past["study_name"]}
    # The copies (easier past data) out-score every measured trial, yet do not out-rank them.
    assert max(t.user_attrs["warm_start_value"] for t in copies) > now["best_valid_auc"]
    assert study.best_trial.number == now["best_trial"] == now["optuna_best_trial"]
    assert study.best_value == now["best_valid_auc"]
    assert study.metric_names == ["valid_auc"]
    assert now["heartbeat"]["failed_trials"] == []
