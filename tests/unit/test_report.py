"""The run-cost report (`make report`) on real instances and real runs of the platform's
assets: runs, step-time percentiles, refusals, steps a gate stopped, reuse, gate pass
rates and the gates failing now, in text and JSON; an empty instance; a bad period.
"""

import json
import subprocess
import sys
import time
from datetime import UTC, datetime

import dagster as dg
import numpy as np
import pytest

from e2i_platform.ops.instance import prepare_instance
from e2i_platform.ops.report import main, parse_moment, render_json, render_text
from e2i_platform.ops.report_figures import collect, percentile
from e2i_platform.ops.reuse import Decision, report_reuse
from e2i_platform.settings import load_settings

from support import definitions, evaluations, materialized, run, write_landing

RAW, VALID = "raw_hcp_profiles", "hcp_profiles"
BOTH = dg.AssetSelection.assets(RAW, VALID)
HEAVY = ("great_expectations", "feast", "mlflow", "optuna", "lightgbm", "sklearn")
WEEK = 7 * 86400


def test_percentile_interpolates_between_ranks_like_numpy():
    assert percentile([4, 1, 3, 2], 50) == 2.5
    assert percentile([1, 2, 3, 4], 95) == pytest.approx(3.85)
    assert percentile(range(1, 21), 95) == pytest.approx(19.05)
    assert percentile([7.0], 95) == 7.0
    assert percentile([], 50) is None
    rng = np.random.default_rng(3)
    for size in (2, 5, 17, 100):
        values = list(rng.exponential(2.0, size))
        for p in (50, 95):
            assert percentile(values, p) == pytest.approx(float(np.percentile(values, p)))


def test_periods_read_as_durations_ago_or_iso_moments():
    now = 1_800_000_000.0
    assert parse_moment("7d", now) == now - WEEK
    assert parse_moment("12h", now) == now - 12 * 3600
    assert parse_moment("1.5h", now) == now - 5400
    assert parse_moment("2026-12-01", now) == datetime(2026, 12, 1, tzinfo=UTC).timestamp()
    assert parse_moment("2026-12-01T08:00+01:00", now) == (
        datetime(2026, 12, 1, 7, 0, tzinfo=UTC).timestamp()
    )
    with pytest.raises(ValueError, match="'7x' is neither a duration"):
        parse_moment("7x", now)


def _bad_hcps(e2i_home, generated):
    hcps = generated.table("hcp_profiles").copy()
    hcps.loc[1, "hcp_id"] = hcps.loc[0, "hcp_id"]  # a duplicate primary key: schema fails
    return write_landing(e2i_home, "hcp_profiles", hcps)


def _step_seconds(result, step: str) -> float:
    (event,) = [e for e in result.all_events if e.is_step_success and e.step_key == step]
    return event.event_specific_data.duration_ms / 1000


def _code_location(defs):
    graph = defs.resolve_asset_graph()
    assets = [k for k in graph.toposorted_asset_keys if graph.get(k).is_materializable]
    return assets, sorted(graph.asset_check_keys, key=str)


def test_runs_refusals_reuse_gates_and_failing_gates(e2i_home, generated, instance):
    defs = definitions(load_settings())
    started = time.time()
    good = [run(defs, instance, selection=BOTH) for _ in range(2)]
    assert all(r.success for r in good)
    landing = _bad_hcps(e2i_home, generated)
    failed = run(defs, instance, selection=BOTH)
    assert not evaluations(failed)[f"{RAW}.schema"].passed
    assert VALID not in materialized(failed)  # the gate stopped it in the same run
    refused = run(defs, instance, selection=dg.AssetSelection.assets(VALID))
    assert not refused.success  # the guard refused it: the gate is closed across runs
    # What make run records when it keeps an asset's materialization instead of running it.
    report_reuse(instance, [Decision(RAW, False, "up to date", "v1", good[1].run_id)], "make run")

    assets, checks = _code_location(defs)
    now = time.time()
    figures = collect(instance, assets, checks, now - WEEK, now + 1, now)
    assert figures.runs == 4 and figures.runs_by_status == {"FAILURE": 2, "SUCCESS": 2}
    by_asset = {a.asset: a for a in figures.assets}
    raw, valid = by_asset[RAW], by_asset[VALID]
    assert (raw.planned, raw.runs, raw.succeeded, raw.failed, raw.refused) == (3, 3, 3, 0, 0)
    assert (raw.reused_by_make_run, raw.reused_in_step, raw.reuse_rate) == (1, 0, 0.25)
    # Step times are Dagster's own durations of the three successful steps.
    seconds = sorted(_step_seconds(r, RAW) for r in [*good, failed])
    assert sorted(raw.seconds) == pytest.approx(seconds)
    assert percentile(raw.seconds, 50) == pytest.approx(seconds[1])
    assert percentile(raw.seconds, 95) == pytest.approx(
        seconds[1] + 0.9 * (seconds[2] - seconds[1])
    )
    assert raw.total_seconds == pytest.approx(sum(seconds))
    assert raw.peak_rss_mib and min(raw.peak_rss_mib) > 0
    # hcp_profiles: planned 4 times, ran twice, stopped in the failing run, then refused.
    assert (valid.planned, valid.runs, valid.succeeded) == (4, 3, 2)
    assert (valid.refused, valid.failed, valid.not_run, valid.reused) == (1, 0, 1, 0)
    assert [a.asset for a in figures.assets if a.planned or a.runs or a.reused] == [RAW, VALID]

    gates = {g.check: g for g in figures.gates}
    schema, expectations = gates[f"{RAW}.schema"], gates[f"{VALID}.expectations"]
    assert (schema.evaluated, schema.passed, schema.failed_error, schema.failed_warn) == (
        3,
        2,
        1,
        0,
    )
    assert len(schema.seconds) == 2  # a failing blocking check fails its step
    assert (expectations.evaluated, expectations.passed, expectations.not_evaluated) == (2, 2, 2)
    assert gates["patient_journeys.references_resolve"].evaluated == 0

    (failing,) = figures.failing
    record = instance.get_latest_asset_check_evaluation_record(
        dg.AssetCheckKey(dg.AssetKey(RAW), "schema")
    )
    assert (failing.check, failing.severity, failing.evaluations) == (f"{RAW}.schema", "ERROR", 1)
    assert failing.run_id == failed.run_id and failing.since == record.event.timestamp
    assert (
        "fail the hcp_profiles contract" in failing.description and "hcp_id" in failing.description
    )

    # The text: one row per asset and gate, the failing gate with its age.
    figures.now = failing.since + 125
    text = render_text(figures, "instance-dir")
    assert "Runs: 4 (failure 2, success 2)" in text
    row = next(line.split() for line in text.splitlines() if line.startswith(f"{RAW} "))
    assert row[1:4] == ["3", "3", f"{seconds[1]:.2f}"] and row[-3:-1] == ["1", "(25%)"]
    row = next(line.split() for line in text.splitlines() if line.startswith(f"{VALID} "))
    assert row[1:3] == ["4", "3"] and row[7:10] == ["1", "(33%)", "1"]  # refused, not run
    row = next(line.split() for line in text.splitlines() if line.startswith(f"{RAW}.schema "))
    assert row[1:6] == ["3", "2", "67%", "1", "0"]
    assert f"ERROR  {RAW}.schema  failing for 2m 5s" in text
    assert "reused: make run kept the asset's last materialization" in text

    # JSON: the same figures.
    document = json.loads(json.dumps(render_json(figures, "instance-dir")))
    raw_json = next(a for a in document["assets"] if a["asset"] == RAW)
    assert (raw_json["runs"], raw_json["reused"], raw_json["reuse_rate"]) == (3, 1, 0.25)
    assert raw_json["p50_seconds"] == round(seconds[1], 3)
    valid_json = next(a for a in document["assets"] if a["asset"] == VALID)
    assert (valid_json["refused"], valid_json["refusal_rate"], valid_json["not_run"]) == (
        1,
        0.3333,
        1,
    )
    schema_json = next(g for g in document["gates"] if g["check"] == f"{RAW}.schema")
    assert (schema_json["evaluated"], schema_json["passed"], schema_json["pass_rate"]) == (
        3,
        2,
        0.6667,
    )
    (failing_json,) = document["failing_gates"]
    assert failing_json["check"] == f"{RAW}.schema" and failing_json["age_seconds"] == 125.0

    # A period that ends before the first run: nothing in it, the gate still fails now.
    before = collect(instance, assets, checks, started - WEEK, started - 1, now)
    assert before.empty and before.runs == 0 and len(before.failing) == 1
    assert "No runs in the period" in render_text(before, "instance-dir")

    # Failing again: the streak grows and keeps its start; fixed: nothing fails.
    raw_only = dg.AssetSelection.assets(RAW)
    run(defs, instance, selection=raw_only)
    figures = collect(instance, assets, checks, now - WEEK, time.time() + 1, time.time())
    (again,) = figures.failing
    assert again.evaluations == 2 and again.since == failing.since
    landing.unlink()
    assert run(defs, instance, selection=raw_only).success
    assert collect(instance, assets, checks, now - WEEK, time.time() + 1, time.time()).failing == []


def test_work_reused_inside_a_step_counts_as_reuse(e2i_home, instance):
    @dg.asset(name="study_like")
    def study_like() -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata={"reused": True, "decision": "reused"})

    assert dg.materialize([study_like], instance=instance).success
    now = time.time()
    figures = collect(instance, [dg.AssetKey("study_like")], [], now - WEEK, now + 1, now)
    (asset,) = figures.assets
    assert (asset.runs, asset.reused_in_step, asset.reused, asset.reuse_rate) == (1, 1, 1, 1.0)


def test_make_report_json_matches_its_table_on_the_platform_instance(e2i_home, monkeypatch, capsys):
    settings = load_settings()
    home = prepare_instance(settings)
    monkeypatch.setenv("DAGSTER_HOME", str(home))  # main sets it; restored after the test
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert run(definitions(settings), instance, selection=dg.AssetSelection.assets(RAW)).success
    assert main(["--json", "--since", "1h"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["instance"] == str(home) and document["runs"] == 1
    (asset,) = document["assets"]
    assert (asset["asset"], asset["runs"], asset["succeeded"], asset["failure_rate"]) == (
        RAW,
        1,
        1,
        0.0,
    )
    (gate,) = document["gates"]
    assert (gate["check"], gate["evaluated"], gate["pass_rate"]) == (f"{RAW}.schema", 1, 1.0)
    assert document["failing_gates"] == [] and "reused" in document["definitions"]

    assert main(["--since", "1h"]) == 0
    text = capsys.readouterr().out
    row = next(line.split() for line in text.splitlines() if line.startswith(f"{RAW} "))
    assert row[1:3] == ["1", "1"]
    # The JSON keeps 3 digits and the table 2, both rounded from the same figure: formatting
    # the JSON's already-rounded value again can differ in the last digit (0.0549 -> 0.055 ->
    # "0.06" while the table says "0.05"), so they agree to the table's half-unit.
    for shown, key in ((row[3], "p50_seconds"), (row[4], "p95_seconds")):
        assert abs(float(shown) - asset[key]) <= 0.005 + 1e-9, (shown, key, asset[key])
    assert "Failing now" in text and "  none" in text


def test_an_empty_instance_says_so(e2i_home, monkeypatch, capsys):
    monkeypatch.setenv("DAGSTER_HOME", str(e2i_home / "dagster"))
    assert main([]) == 0
    text = capsys.readouterr().out
    assert "No runs in the period" in text and str(e2i_home / "dagster") in text
    assert main(["--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert (document["runs"], document["assets"], document["gates"]) == (0, [], [])
    assert document["failing_gates"] == []


def test_a_bad_period_is_an_error_naming_the_value(e2i_home, monkeypatch, capsys):
    monkeypatch.setenv("DAGSTER_HOME", str(e2i_home / "dagster"))
    with pytest.raises(SystemExit) as exit_:
        main(["--since", "7x"])
    assert exit_.value.code == 2
    assert "--since '7x' is neither a duration" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--since", "1d", "--until", "2d"])
    assert "is not before --until '2d'" in capsys.readouterr().err


def test_the_report_imports_no_heavy_library(e2i_home):
    code = (
        "import sys; from e2i_platform.ops.report import main; main([]); "
        f"print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "No runs in the period" in done.stdout and "HEAVY []" in done.stdout
