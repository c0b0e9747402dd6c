"""HPO benchmarks: part of `make bench`; alone: `python bench/hpo.py [--seeds 5] [--home H]`.

1. Warm vs cold start. Per seed: a past study (30 trials) on one sample of a
   synthetic discontinuation-like problem; then, on a new sample of the same
   problem, a cold study and a study warm started by the platform's `warm_start`
   from the past one (its trials copied for the sampler, as PRUNED trials holding
   their past value at the last round, its best five parameter sets re-evaluated
   first). Figure: trials each needed to reach the cold study's
   best value (only trials evaluated on the new data count), median over the
   seeds. The validation split has 20,000 rows, so that "reaching the best" is
   about the parameters, not about which configuration got lucky on a small
   validation sample.
2. MLflow logging overhead: the same 20-trial search as `make run` configures it
   (rounds, early stopping, pruner) with tracking (SQLite under a temporary
   directory, one nested run per trial) and without, on the real training set of a
   `make run` home (`--home`, which `make bench` provides): the time the search
   waited on logging, and the wall-time difference.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TRIALS = 30
ROUNDS = 150


def problem(seed: int, rows: int = 4000, validation_rows: int = 20_000, noise: int = 20):
    """Eight informative features (one non-linear, one interaction) and `noise` pure-noise
    ones, about 10% positives: tuning matters because trees can overfit the noise."""
    from e2i_platform.training.model_data import ModelData

    rng = np.random.default_rng(seed)
    k = 8 + noise
    weights = np.zeros(k)
    weights[:8] = [1.0, -0.8, 0.6, 0.0, 0.3, 0.0, -0.4, 0.0]

    def sample(n):
        x = pd.DataFrame(rng.normal(size=(n, k)), columns=[f"f{i}" for i in range(k)])
        a = x.to_numpy()
        logit = a @ weights + 0.8 * np.sin(2 * a[:, 3]) + 0.6 * a[:, 5] * a[:, 7] - 2.5
        y = pd.Series((rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int))
        return x, y

    X, y = {}, {}
    for split, n in (("train", rows), ("validation", validation_rows), ("test", 10)):
        X[split], y[split] = sample(n)
    return ModelData(list(X["train"].columns), [], {}, X, y, {})


def real_training_set(home: Path):
    """The training set a `make run` in `home` produced, as model matrices."""
    from e2i_platform.training.model_data import model_data

    return model_data(pd.read_parquet(home / "warehouse" / "training_dataset.parquet"))


def _study(storage, name, seed, rounds: int | None = ROUNDS):
    """A study as the platform makes one; `rounds` None keeps the configured rounds."""
    import optuna

    from e2i_platform.settings import load_settings
    from e2i_platform.training.study import make_pruner, make_sampler

    cfg = load_settings().optuna
    if rounds is not None:
        cfg = cfg.model_copy(update={"max_boost_rounds": rounds})
    cfg = cfg.model_copy(update={"sampler": cfg.sampler.model_copy(update={"seed": seed})})
    return optuna.create_study(
        study_name=name,
        storage=storage,
        direction="maximize",
        sampler=make_sampler(cfg),
        pruner=make_pruner(cfg),
    ), cfg


def _fingerprint(data):
    from e2i_platform.training.hpo import ALGORITHM, PROBLEM_TYPE, SEARCH_SPACE_VERSION
    from e2i_platform.training.warm_start import dataset_fingerprint

    return dataset_fingerprint(
        data.X["train"], data.y["train"], ALGORITHM, PROBLEM_TYPE, SEARCH_SPACE_VERSION
    )


def trials_to_reach(study, target: float) -> int:
    """1-based count of trials evaluated in this study until one reaches `target`."""
    from optuna.trial import TrialState

    own = [t for t in study.trials if "warm_start_from" not in t.user_attrs]
    for i, t in enumerate(own, 1):
        if t.state == TrialState.COMPLETE and t.value is not None and t.value >= target - 1e-12:
            return i
    return len(own) + 1  # not reached within the budget


def warm_vs_cold(seed: int) -> dict:
    import optuna

    from e2i_platform.training.hpo import Objective, search_space
    from e2i_platform.training.warm_start import FINGERPRINT_ATTR, warm_start

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.InMemoryStorage()
    past_data, new_data = problem(1000 + seed), problem(2000 + seed)
    space = search_space()

    past, cfg = _study(storage, "past", seed)
    past.set_user_attr(FINGERPRINT_ATTR, _fingerprint(past_data).as_dict())
    past.optimize(Objective(past_data, space, 7, ROUNDS, 20), n_trials=TRIALS)

    cold, _ = _study(optuna.storages.InMemoryStorage(), "cold", seed + 100)
    cold.optimize(Objective(new_data, space, 7, ROUNDS, 20), n_trials=TRIALS)
    best = cold.best_value

    warm, _ = _study(storage, "warm", seed + 100)
    current = _fingerprint(new_data)
    warm.set_user_attr(FINGERPRINT_ATTR, current.as_dict())
    plan = warm_start(warm, storage, current, cfg.warm_start, space, final_step=ROUNDS)
    target = Objective(new_data, space, 7, ROUNDS, 20)
    for _ in range(TRIALS):
        warm.optimize(target, n_trials=1)
        if trials_to_reach(warm, best) <= len(
            [t for t in warm.trials if "warm_start_from" not in t.user_attrs]
        ):
            break
    return {
        "seed": seed,
        "cold_best": best,
        "cold_trials": trials_to_reach(cold, best),
        "warm_trials": trials_to_reach(warm, best),
        "seeded": plan.seed_trials,
        "reevaluated": plan.reevaluated,
    }


def mlflow_overhead(data, trials: int = 20, repeats: int = 5) -> dict:
    """The same search untracked and tracked, alternating, after one warm-up search;
    medians over `repeats`. Reports the time the search spent in logging (callbacks
    plus the final wait for the background logger) and the wall-time difference."""
    import optuna

    from e2i_platform.resources.mlflow import MlflowResource
    from e2i_platform.training.hpo import Objective, TrialLog, search_space
    from e2i_platform.training.study import pruning_rounds

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out: dict[bool, list] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        mlflow = MlflowResource(
            tracking_uri=f"sqlite:///{tmp}/mlflow.db", experiment="bench", registered_model="b"
        )
        mlflow.ensure_reachable()  # schema creation is not part of a search
        for tracked in (False, *(False, True) * repeats):
            # The search as make run configures it (rounds, early stopping, pruner).
            study, cfg = _study(optuna.storages.InMemoryStorage(), "s", 3, rounds=None)
            parent = mlflow.start_study_run("bench", {}, {}) if tracked else None
            run_trial = Objective(
                data,
                search_space(),
                7,
                cfg.max_boost_rounds,
                cfg.early_stopping_rounds,
                report_rounds=pruning_rounds(cfg),
            )
            log = TrialLog(mlflow, parent, run_trial.curves)
            started = time.perf_counter()
            study.optimize(
                run_trial,
                n_trials=trials,
                callbacks=[log.callback],
            )
            log.close()
            out[tracked].append((time.perf_counter() - started, log.seconds, log.runs))
            if parent:
                mlflow.end_run(parent)
    plain = statistics.median(r[0] for r in out[False][1:])  # the first is the warm-up
    tracked_s = statistics.median(r[0] for r in out[True])
    logging_s = statistics.median(r[1] for r in out[True])
    runs = out[True][0][2]
    return {"plain_s": plain, "tracked_s": tracked_s, "logging_s": logging_s, "runs": runs}


def bench_hpo(seeds: int = 5, home: Path | None = None) -> list[dict]:
    results = [warm_vs_cold(s) for s in range(seeds)]
    cold = statistics.median(r["cold_trials"] for r in results)
    warm = statistics.median(r["warm_trials"] for r in results)
    if home is not None:
        data, what = real_training_set(home), "real training set of make run"
    else:
        data, what = problem(7), "synthetic problem"
    rows_ = len(data.X["train"])
    overhead = mlflow_overhead(data)
    share = overhead["logging_s"] / overhead["tracked_s"]
    wall_share = (overhead["tracked_s"] - overhead["plain_s"]) / overhead["tracked_s"]
    return [
        {
            "benchmark": f"HPO cold start: trials to reach its best (median of {seeds} seeds)",
            "value": f"{cold:g} trials ({', '.join(str(r['cold_trials']) for r in results)})",
            "ratio": "1.00x",
            "target": "baseline",
        },
        {
            "benchmark": "HPO warm start from a similar study: trials to reach the cold best",
            "value": f"{warm:g} trials ({', '.join(str(r['warm_trials']) for r in results)})",
            "ratio": f"{warm / cold:.2f}x",
            "target": f"<= 0.33x ({'met' if warm / cold <= 1 / 3 else 'NOT met'})",
        },
        {
            "benchmark": f"MLflow logging, {overhead['runs']} trials (nested runs, SQLite), "
            f"{what} ({rows_:,} train rows): time the search waited on logging",
            "value": f"{overhead['logging_s']:.3f} s of {overhead['tracked_s']:.2f} s search",
            "ratio": f"{share:.1%}",
            "target": f"<= 5% ({'met' if share <= 0.05 else 'NOT met'})",
        },
        {
            "benchmark": "  same: wall time tracked vs untracked (median of 5 each)",
            "value": f"{overhead['tracked_s']:.2f} s vs {overhead['plain_s']:.2f} s",
            "ratio": f"{wall_share:+.1%}",
            "target": f"<= 5% ({'met' if wall_share <= 0.05 else 'NOT met'})",
        },
    ]


def main() -> int:
    from make_run import bench_make_run
    from run import print_table

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--home", type=Path, help="a make run home (default: run one)")
    args = parser.parse_args()
    started = time.perf_counter()
    if args.home:
        print_table(bench_hpo(args.seeds, args.home))
    else:
        with tempfile.TemporaryDirectory(prefix="e2i-bench-run-") as tmp:
            rows = bench_make_run(Path(tmp))
            print_table(rows + bench_hpo(args.seeds, Path(tmp)))
    print(f"\n({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
