"""Training runs: fingerprints, the completion contract, atomic writes, run modes,
allocation, and the writer lock that keeps a resume off a run being written."""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from e2i_platform.lib.store import LockTimeout
from e2i_platform.training.fingerprints import (
    exec_fingerprint,
    fingerprint,
    library_versions,
    spec_fingerprint,
)
from e2i_platform.training.run_files import (
    METADATA_FILE,
    METRICS_FILE,
    MODEL_FILE,
    REQUIRED_FILES,
)
from e2i_platform.training.runs import ModelRuns, RunDecision

SPEC = "a" * 64
EXEC = "b" * 64


def write_model_text(text: str = "tree\n"):
    def write(path: Path) -> None:
        path.write_text(text)

    return write


def runs_at(root: Path, spec: str = SPEC, exec_: str = EXEC, model: str = "m") -> ModelRuns:
    return ModelRuns(root, model, spec, exec_)


def complete_run(runs: ModelRuns, finished_at: str | None = None) -> tuple[int, Path]:
    variant, path = runs.allocate()
    metadata = {"model": runs.model}
    if finished_at is not None:
        metadata["finished_at"] = finished_at
    runs.write(path, write_model_text(), {"auc": 0.8}, metadata)
    return variant, path


def decide(runs: ModelRuns, mode: str) -> RunDecision:
    """The decision alone: the writer lock it took is let go at once."""
    with runs.decided(mode) as decision:
        return decision


def files_in(path: Path) -> set[str]:
    return {p.name for p in path.iterdir()}


# --- fingerprints ---------------------------------------------------------------------------


def test_fingerprint_is_stable_under_key_order():
    assert fingerprint({"a": 1, "b": {"x": 1, "y": 2}}) == fingerprint(
        {"b": {"y": 2, "x": 1}, "a": 1}
    )
    assert len(fingerprint({})) == 64
    assert spec_fingerprint({"lr": 0.1, "rounds": 10}, {"t1": "v1", "t2": "v2"}, {"n": "fs"}) == (
        spec_fingerprint({"rounds": 10, "lr": 0.1}, {"t2": "v2", "t1": "v1"}, {"n": "fs"})
    )
    assert exec_fingerprint("abc", {"numpy": "2", "pandas": "2.2"}, 7) == exec_fingerprint(
        "abc", {"pandas": "2.2", "numpy": "2"}, 7
    )


def test_spec_fingerprint_changes_with_every_input():
    base = spec_fingerprint({"lr": 0.1}, {"t": "v1"}, {"name": "fs", "features": ["a"]})
    changed = [
        spec_fingerprint({"lr": 0.2}, {"t": "v1"}, {"name": "fs", "features": ["a"]}),
        spec_fingerprint({"lr": 0.1}, {"t": "v2"}, {"name": "fs", "features": ["a"]}),
        spec_fingerprint({"lr": 0.1}, {"t": "v1", "u": "v1"}, {"name": "fs", "features": ["a"]}),
        spec_fingerprint({"lr": 0.1}, {"t": "v1"}, {"name": "fs", "features": ["a", "b"]}),
    ]
    assert len({base, *changed}) == 5


def test_exec_fingerprint_changes_with_every_input():
    base = exec_fingerprint("c1", {"lightgbm": "4.7.0"}, 7)
    changed = [
        exec_fingerprint("c2", {"lightgbm": "4.7.0"}, 7),
        exec_fingerprint("c1", {"lightgbm": "4.7.1"}, 7),
        exec_fingerprint("c1", {"lightgbm": "4.7.0"}, 8),
    ]
    assert len({base, *changed}) == 4


def test_library_versions_reports_installed_and_missing():
    versions = library_versions(("pytest", "no-such-distribution-e2i"))
    assert versions["pytest"][0].isdigit()
    assert versions["no-such-distribution-e2i"] == "not-installed"


def test_base_directory_is_named_by_both_fingerprints(tmp_path):
    runs = ModelRuns(tmp_path, "disc", "0123456789abcdef", "fedcba9876543210")
    assert runs.base == tmp_path / "disc" / "spec-01234567_exec-fedcba98"
    assert runs.path(3) == runs.base / "v3"


# --- completion contract --------------------------------------------------------------------


def test_missing_variant_directory_is_incomplete(tmp_path):
    completion = runs_at(tmp_path).completion(1)
    assert not completion.complete
    assert "v1" in completion.reason


@pytest.mark.parametrize("missing", REQUIRED_FILES)
def test_missing_file_is_incomplete_and_named(tmp_path, missing):
    runs = runs_at(tmp_path)
    variant, path = complete_run(runs)
    (path / missing).unlink()
    completion = runs.completion(variant)
    assert not completion.complete
    assert completion.reason == f"missing {missing}"


def test_empty_model_is_incomplete(tmp_path):
    runs = runs_at(tmp_path)
    variant, path = complete_run(runs)
    (path / MODEL_FILE).write_bytes(b"")
    completion = runs.completion(variant)
    assert not completion.complete
    assert completion.reason == f"{MODEL_FILE} is empty"


@pytest.mark.parametrize("name", [METRICS_FILE, METADATA_FILE])
@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"auc": 0.8', "is not valid JSON"),  # truncated write
        ("", "is empty"),
        ("{}", "is an empty JSON object"),
        ("[1, 2]", "is not a JSON object (got list)"),
        ('"text"', "is not a JSON object (got str)"),
    ],
)
def test_bad_json_is_incomplete_and_named(tmp_path, name, content, expected):
    runs = runs_at(tmp_path)
    variant, path = complete_run(runs)
    (path / name).write_text(content)
    completion = runs.completion(variant)
    assert not completion.complete
    assert completion.reason.startswith(f"{name} {expected}")


def test_write_then_complete_with_no_temp_files(tmp_path):
    runs = runs_at(tmp_path)
    variant, path = runs.allocate()
    runs.write(path, write_model_text("model body"), {"auc": 0.81}, {"rows": 10})
    completion = runs.completion(variant)
    assert completion.complete, completion.reason
    assert completion.reason == "complete"
    assert files_in(path) == set(REQUIRED_FILES)
    assert (path / MODEL_FILE).read_text() == "model body"
    assert json.loads((path / METRICS_FILE).read_text()) == {"auc": 0.81}
    metadata = json.loads((path / METADATA_FILE).read_text())
    assert metadata["rows"] == 10
    assert "finished_at" in metadata
    assert runs.latest_complete() == variant


def test_write_whose_model_writer_raises_leaves_nothing(tmp_path):
    runs = runs_at(tmp_path)
    variant, path = runs.allocate()

    def broken(tmp: Path) -> None:
        tmp.write_text("half a model")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        runs.write(path, broken, {"auc": 0.8}, {"rows": 1})
    assert files_in(path) == set()
    completion = runs.completion(variant)
    assert not completion.complete
    assert completion.reason == f"missing {MODEL_FILE}"


def test_rewrite_that_fails_uncommits_the_earlier_result(tmp_path):
    runs = runs_at(tmp_path)
    variant, path = complete_run(runs)

    def broken(tmp: Path) -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        runs.write(path, broken, {"auc": 0.9}, {"rows": 2})
    assert files_in(path) == set()
    assert not runs.completion(variant).complete


def test_write_refuses_an_empty_model_and_empty_json(tmp_path):
    runs = runs_at(tmp_path)
    variant, path = runs.allocate()
    with pytest.raises(RuntimeError, match="empty"):
        runs.write(path, lambda tmp: None, {"auc": 0.8}, {"rows": 1})
    assert files_in(path) == set()
    with pytest.raises(ValueError, match="metrics must be a non-empty dict"):
        runs.write(path, write_model_text(), {}, {"rows": 1})
    with pytest.raises(ValueError, match="metadata must be a non-empty dict"):
        runs.write(path, write_model_text(), {"auc": 0.8}, [])  # type: ignore[arg-type]
    assert files_in(path) == set()
    assert not runs.completion(variant).complete


# --- allocation and variants ----------------------------------------------------------------


def test_allocate_counts_up_and_ignores_other_entries(tmp_path):
    runs = runs_at(tmp_path)
    assert runs.variants() == []
    assert runs.allocate()[0] == 1
    (runs.base / "v7").mkdir()
    (runs.base / "notes").mkdir()
    (runs.base / "v9").write_text("a file, not a variant")
    (runs.base / "v01").mkdir()
    assert runs.variants() == [1, 7]
    variant, path = runs.allocate()
    assert variant == 8
    assert path == runs.base / "v8"
    assert path.is_dir()
    # v9 is taken by a file: the next allocation steps past it.
    assert runs.allocate()[0] == 10


def allocate_many(root: str, count: int, barrier, results) -> None:
    """Child process: wait for the sibling, then allocate `count` variants."""
    runs = ModelRuns(Path(root), "m", SPEC, EXEC)
    barrier.wait(timeout=30)
    results.put([runs.allocate()[0] for _ in range(count)])


def test_two_processes_allocating_at_once_never_collide(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    results = ctx.Queue()
    workers = [
        ctx.Process(target=allocate_many, args=(str(tmp_path), 25, barrier, results))
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    got = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0
    allocated = got[0] + got[1]
    assert len(allocated) == 50
    assert sorted(allocated) == list(range(1, 51))
    assert runs_at(tmp_path).variants() == list(range(1, 51))


# --- run modes ------------------------------------------------------------------------------


def test_unknown_mode_names_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match=r"'sometimes'.*reuse_if_exists.*continue_from_previous"):
        decide(runs_at(tmp_path), "sometimes")


def test_reuse_if_exists_trains_when_nothing_is_complete_then_reuses(tmp_path):
    runs = runs_at(tmp_path)
    with runs.decided("reuse_if_exists") as first:
        assert (first.action, first.variant, first.path) == ("train", 1, runs.base / "v1")
        assert not first.reused
        runs.write(first.path, write_model_text(), {"auc": 0.8}, {"rows": 1})

    again = decide(runs, "reuse_if_exists")
    assert (again.action, again.variant, again.path) == ("reuse", 1, first.path)
    assert again.reused
    assert again.reason == "reuse_if_exists: v1 is complete"
    assert again.as_metadata()["reused"] is True


def test_reuse_if_exists_reuses_the_newest_complete_past_an_incomplete_one(tmp_path):
    runs = runs_at(tmp_path)
    complete_run(runs)
    complete_run(runs)
    runs.allocate()  # v3: started, never finished
    decision = decide(runs, "reuse_if_exists")
    assert (decision.action, decision.variant) == ("reuse", 2)
    assert runs.variants() == [1, 2, 3]


def test_force_new_always_allocates(tmp_path):
    runs = runs_at(tmp_path)
    complete_run(runs)
    decisions = [decide(runs, "force_new") for _ in range(2)]
    assert [(d.action, d.variant) for d in decisions] == [("train", 2), ("train", 3)]
    assert all(d.path.is_dir() and files_in(d.path) == set() for d in decisions)


def test_resume_if_incomplete_clears_partial_files_and_stays_in_place(tmp_path):
    runs = runs_at(tmp_path)
    complete_run(runs)
    variant, path = runs.allocate()
    (path / MODEL_FILE).write_text("half")
    (path / METRICS_FILE).write_text('{"auc": 0.')
    (path / f".{MODEL_FILE}.x.tmp").write_text("crash leftover")
    (path / "plots").mkdir()
    (path / "plots" / "a.png").write_bytes(b"png")

    with runs.decided("resume_if_incomplete") as decision:
        assert (decision.action, decision.variant, decision.path) == ("resume", 2, path)
        assert "missing metadata.json" in decision.reason
        assert files_in(path) == set()
        assert runs.variants() == [1, 2]
        runs.write(path, write_model_text(), {"auc": 0.8}, {"rows": 1})

    after = decide(runs, "resume_if_incomplete")
    assert (after.action, after.variant) == ("reuse", 2)


def test_resume_if_incomplete_with_nothing_trains(tmp_path):
    decision = decide(runs_at(tmp_path), "resume_if_incomplete")
    assert (decision.action, decision.variant) == ("train", 1)


def write_partially(root: str, started, finish) -> None:
    """Child process: a run that decided force_new and is training into its variant (a
    partial model file) until told to finish; it then ends with the variant incomplete,
    as a crash mid-training would leave it."""
    runs = ModelRuns(Path(root), "m", SPEC, EXEC)
    with runs.decided("force_new") as decision:
        (decision.path / MODEL_FILE).write_text("half")
        started.put(decision.variant)
        finish.wait(timeout=60)


@contextmanager
def another_run_writing(root: Path) -> Iterator[int]:
    """Another process writing a new variant (its number) for the block."""
    ctx = multiprocessing.get_context("spawn")
    started, finish = ctx.Queue(), ctx.Event()
    worker = ctx.Process(target=write_partially, args=(str(root), started, finish))
    worker.start()
    try:
        yield started.get(timeout=60)
    finally:
        finish.set()
        worker.join(timeout=30)
    assert worker.exitcode == 0


def test_resume_leaves_a_run_being_written_alone_and_trains_a_new_variant(tmp_path):
    runs = runs_at(tmp_path)
    with another_run_writing(tmp_path) as writing:
        assert writing == 1
        with runs.decided("resume_if_incomplete") as decision:
            assert (decision.action, decision.variant, decision.path) == (
                "train",
                2,
                runs.base / "v2",
            )
            assert decision.reason == (
                "resume_if_incomplete: v1 is being written by another run; training v2"
            )
        assert files_in(runs.path(1)) == {MODEL_FILE}
        assert (runs.path(1) / MODEL_FILE).read_text() == "half"
    assert runs.variants() == [1, 2]


def test_resume_clears_a_run_whose_writer_let_go_and_becomes_its_writer(tmp_path):
    runs = runs_at(tmp_path)
    with another_run_writing(tmp_path):
        pass  # its process ends, leaving v1 incomplete
    assert files_in(runs.path(1)) == {MODEL_FILE}

    with runs.decided("resume_if_incomplete") as resumed:
        assert (resumed.action, resumed.variant) == ("resume", 1)
        assert "missing metrics.json" in resumed.reason
        assert files_in(runs.path(1)) == set()
        # This run is v1's writer now: another resume leaves v1 to it.
        (runs.path(1) / MODEL_FILE).write_text("retraining")
        assert decide(runs, "resume_if_incomplete").variant == 2
        assert (runs.path(1) / MODEL_FILE).read_text() == "retraining"


def test_a_reuse_holds_no_writer_lock_and_lock_files_are_no_variants(tmp_path):
    runs = runs_at(tmp_path)
    with runs.decided("reuse_if_exists") as training:
        assert training.action == "train"
        with pytest.raises(LockTimeout), runs.writer_lock(1, timeout=0):
            pass
        runs.write(training.path, write_model_text(), {"auc": 0.8}, {"rows": 1})
    with runs.decided("reuse_if_exists") as reuse:
        assert (reuse.action, reuse.variant) == ("reuse", 1)
        with runs.writer_lock(1, timeout=0):
            pass
    assert {p.name for p in runs.base.iterdir()} == {"v1", ".allocate", ".v1.writing"}
    assert runs.variants() == [1]


def test_continue_from_previous_finds_the_newest_run_in_another_spec_dir(tmp_path):
    old = runs_at(tmp_path, spec="1" * 64)
    newer = runs_at(tmp_path, spec="2" * 64)
    other_model = runs_at(tmp_path, spec="3" * 64, model="other")
    complete_run(old, finished_at="2026-01-01T00:00:00+00:00")
    _, newer_path = complete_run(newer, finished_at="2026-02-01T00:00:00+00:00")
    complete_run(other_model, finished_at="2026-03-01T00:00:00+00:00")
    newer.allocate()  # incomplete: never a candidate

    runs = runs_at(tmp_path, spec="4" * 64)
    decision = decide(runs, "continue_from_previous")
    assert decision.action == "continue"
    assert decision.previous == newer_path
    assert (decision.variant, decision.path) == (1, runs.base / "v1")
    assert decision.path.is_dir()
    assert newer_path.parent.name in decision.reason
    assert decision.as_metadata()["previous"] == str(newer_path)


def test_continue_from_previous_falls_back_to_mtime(tmp_path):
    first = runs_at(tmp_path, spec="1" * 64)
    second = runs_at(tmp_path, spec="2" * 64)
    _, a = complete_run(first)
    _, b = complete_run(second)
    for path in (a, b):  # no finished_at: ordered by metadata.json's mtime
        (path / METADATA_FILE).write_text(json.dumps({"model": "m"}))
    os.utime(a / METADATA_FILE, (2_000_000_000, 2_000_000_000))
    os.utime(b / METADATA_FILE, (1_000_000_000, 1_000_000_000))
    assert decide(runs_at(tmp_path), "continue_from_previous").previous == a


def test_continue_from_previous_with_no_complete_run_trains_from_scratch(tmp_path):
    runs_at(tmp_path, spec="1" * 64).allocate()  # incomplete only
    runs = runs_at(tmp_path)
    decision = decide(runs, "continue_from_previous")
    assert (decision.action, decision.variant, decision.previous) == ("train", 1, None)
    assert "no complete run" in decision.reason


def test_a_model_is_loaded_only_as_the_bytes_its_record_names(tmp_path):
    """What is hashed is what is loaded (one read): a file replaced since its record was
    written, or gone, is refused by name, never scored with."""
    import hashlib

    import lightgbm as lgb
    import numpy as np

    from e2i_platform.training.model_run import load_verified_booster

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(200, 3)), rng.integers(0, 2, 200)
    booster = lgb.train({"verbose": -1}, lgb.Dataset(X, y), num_boost_round=3)
    path = tmp_path / MODEL_FILE
    booster.save_model(str(path))
    sha = hashlib.sha256(path.read_bytes()).hexdigest()

    np.testing.assert_allclose(load_verified_booster(path, sha).predict(X), booster.predict(X))
    path.write_text(path.read_text() + "\n")  # another actor's edit
    with pytest.raises(ValueError, match=f"{path} is not the expected file"):
        load_verified_booster(path, sha)
    path.unlink()
    with pytest.raises(ValueError, match=f"{path} is missing"):
        load_verified_booster(path, sha)
