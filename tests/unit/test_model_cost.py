"""What the cost gate reads, measured by model_evaluation: one-thread scoring timed once
for the latency p95 and the CPU cost per 1M rows, the model's files on disk, and a
production cost that cannot be found is unmeasured (never 0)."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from e2i_platform.training.evaluation import model_size, production_cost, scoring_latency

VARIANT = "models/discontinuation_lgbm/spec-0123abcd_exec-4567ef01/v2"


def _booster():
    import lightgbm as lgb

    rng = np.random.default_rng(3)
    X = pd.DataFrame(rng.normal(size=(2000, 8)), columns=[f"f{i}" for i in range(8)])
    y = (X["f0"] + rng.normal(scale=0.5, size=len(X)) > 0).astype(int)
    params = {"objective": "binary", "verbose": -1, "num_leaves": 31, "seed": 1}
    return lgb.train(params, lgb.Dataset(X, y), num_boost_round=40), X


def test_one_thread_scoring_is_timed_once_for_latency_and_cost():
    booster, X = _booster()
    calls = []

    def one_core(batch):
        calls.append(len(batch))
        return booster.predict(batch, num_threads=1)

    latency = scoring_latency(one_core, X, rows=500, repeats=7, seed=0)
    assert calls == [500] * 8  # a warm-up, then the 7 timed batches: nothing timed twice
    assert (latency["batch_rows"], latency["repeats"], latency["threads"]) == (500, 7, 1)
    cost = latency["per_million_rows"]
    assert cost["rows_scored"] == 3500
    assert cost["cpu_seconds"] > 0 and cost["wall_seconds"] > 0
    # One thread: the scoring thread's CPU time cannot exceed the wall time by much.
    assert cost["cpu_seconds"] <= cost["wall_seconds"] * 1.1 + 0.05
    assert 0 < latency["p50_ms"] <= latency["p95_ms"]


def test_model_size_is_the_files_of_the_variant(tmp_path):
    variant = tmp_path.joinpath(*VARIANT.split("/"))
    variant.mkdir(parents=True)
    (variant / "model.txt").write_bytes(b"x" * 3000)
    (variant / "metrics.json").write_text("{}")
    size = model_size(tmp_path, {"path": VARIANT})
    assert size["measured"] is True
    assert size["files"] == {"metrics.json": 2, "model.txt": 3000}
    assert size["bytes"] == 3002 and size["mb"] == round(3002 / 2**20, 4)


def test_a_missing_variant_has_no_size(tmp_path):
    size = model_size(tmp_path, {"path": VARIANT})
    assert size == {"measured": False, "why": f"{VARIANT} is not a directory of this home"}


def test_a_model_whose_training_is_not_in_the_event_log_has_no_production_cost(tmp_path):
    trained = {"path": VARIANT, "model_sha256": "ab" * 32, "action": "reuse"}
    with dg.instance_for_test() as instance:
        cost = production_cost(instance, tmp_path, trained, run_id="r-1")
    assert cost["measured"] is False
    assert cost["why"] == f"no trained_model step that trained {VARIANT} in this instance"
    assert "seconds" not in cost


def test_a_record_path_outside_the_home_is_refused(tmp_path):
    trained = {"path": "../elsewhere/v1", "model_sha256": "ab" * 32, "action": "train"}
    with dg.instance_for_test() as instance, pytest.raises(ValueError, match="leaves the home"):
        production_cost(instance, tmp_path, trained, run_id="r-1")
