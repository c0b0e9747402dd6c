"""The commands people use: `make run`'s entry point and `dagster asset materialize`
share one instance under E2I_HOME, and the gate holds between them."""

import os
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pandas as pd

from support import write_landing

REPO = Path(__file__).resolve().parents[2]
DAGSTER = str(Path(sys.executable).parent / "dagster")


def _env(home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "E2I_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster"),
        "E2I_PATIENTS": "300",
        "E2I_HCPS": "40",
    }


def _command(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        list(args), cwd=REPO, env=_env(home), capture_output=True, text=True, timeout=600
    )


def _materialize(home: Path, selection: str) -> subprocess.CompletedProcess:
    return _command(
        home,
        DAGSTER,
        "asset",
        "materialize",
        "-m",
        "e2i_platform.definitions",
        "--select",
        selection,
    )


def _run(home: Path) -> subprocess.CompletedProcess:
    return _command(home, sys.executable, "-m", "e2i_platform.ops.run")


def test_make_run_then_cli_child_run_is_refused_until_fixed(e2i_home, generated, config_copy):
    # 300 patients cannot judge a model: the promotion gates get thresholds that pass
    # (they have their own tests at 5,000 patients); this test is about the commands.
    promotion = config_copy / "promotion.yaml"
    text = promotion.read_text().replace("min_roc_auc: 0.65", "min_roc_auc: 0.5")
    promotion.write_text(text.replace("max_region_auc_gap: 0.15", "max_region_auc_gap: 1.0"))
    good = generated.table("patient_journeys")
    bad = good.copy()
    bad.loc[bad.index[:3], "age_group"] = "90+"
    write_landing(e2i_home, "patient_journeys", bad)

    main = _run(e2i_home)
    assert main.returncode == 1, main.stdout + main.stderr
    assert "FAIL (ERROR) raw_patient_journeys.schema" in main.stdout
    assert "PASS         raw_hcp_profiles.schema" in main.stdout
    assert "Open the UI: make dev" in main.stdout
    # Progress as it goes: a line per materialized asset and per failed gate, before the
    # summary, and no failure line ending on a dangling colon.
    progress, summary = main.stdout.split("\nE2I run ", 1)
    (done_line,) = [ln for ln in summary.splitlines() if ln.startswith("Assets materialized")]
    done = set(done_line.split(": ", 1)[1].split(", "))
    shown = set(re.findall(r"^  \[ *[\d.]+s\] done +(\S+)", progress, flags=re.M))
    assert shown == done and "raw_patient_journeys" in shown
    assert "FAIL   raw_patient_journeys.schema (ERROR): raw_patient_journeys: 3 of" in progress
    dangling = [ln for ln in main.stdout.splitlines() if "FAIL" in ln and ln.endswith(":")]
    assert not dangling, dangling
    # The ending says what stopped the run, with its evidence, and what to do next.
    assert "Champion: none released yet" in main.stdout
    assert "Stopped by: raw_patient_journeys.schema (raw_patient_journeys: 3 of" in main.stdout
    assert "Next: read the evidence above" in main.stdout
    (blocked_line,) = [ln for ln in main.stdout.splitlines() if ln.startswith("Not materialized")]
    blocked = set(blocked_line.split(": ", 1)[1].split(", "))
    # The failed gate stops the validated table and everything that depends on it.
    assert blocked == {
        "patient_journeys",
        "patient_features",
        "hcp_features",
        "trigger_features",
        "feature_registry",
        "online_features",
        "training_dataset",
        "hpo_study",
        "trained_model",
        "model_evaluation",
        "champion_model",
        "patient_risk_scores",
    }
    assert (e2i_home / "dagster" / "dagster.yaml").exists()
    _assert_a_run_of_the_code_location(e2i_home)

    refused = _materialize(e2i_home, "patient_journeys")
    assert refused.returncode != 0
    output = refused.stdout + refused.stderr
    assert "patient_journeys refused to run" in output
    assert "gate schema on raw_patient_journeys" in output
    assert not (e2i_home / "warehouse" / "patient_journeys.parquet").exists()

    write_landing(e2i_home, "patient_journeys", good)
    fixed_gate = _materialize(e2i_home, "raw_patient_journeys")
    assert fixed_gate.returncode == 0, fixed_gate.stdout + fixed_gate.stderr
    child = _materialize(e2i_home, "patient_journeys")
    assert child.returncode == 0, child.stdout + child.stderr
    stored = pd.read_parquet(e2i_home / "warehouse" / "patient_journeys.parquet")
    assert len(stored) == len(good)

    # make run again: what the CLI fixed and what passed the first time is reused; only
    # what the gate had blocked runs.
    rerun = _run(e2i_home)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "reused   raw_patient_journeys: up to date" in rerun.stdout, rerun.stdout
    champion = re.search(
        r"^Champion: release (\S+) \(promotion\), model version", rerun.stdout, re.M
    )
    assert champion and "Stopped by" not in rerun.stdout, rerun.stdout
    assert f"manifest {e2i_home / 'releases' / champion[1] / 'manifest.json'}" in rerun.stdout
    assert "reused   patient_journeys: up to date" in rerun.stdout
    assert "reused   raw_hcp_profiles: up to date" in rerun.stdout
    assert "ran      patient_features: never materialized" in rerun.stdout
    assert "[reused, run" in rerun.stdout  # the kept gate results are shown as such
    ran = {ln.split()[1].rstrip(":") for ln in rerun.stdout.splitlines() if ln.startswith("  ran ")}
    # treatment_events was materialized, but its references_resolve gate never completed
    # (it needs patient_journeys): an unfinished gate is not reused.
    assert "ran      treatment_events: gate references_resolve: its latest evaluation" in (
        rerun.stdout
    )
    assert ran == blocked - {"patient_journeys"} | {"treatment_events"}

    # Nothing changed: nothing runs, and each reuse is recorded in the instance.
    unchanged = _run(e2i_home)
    assert unchanged.returncode == 0, unchanged.stdout + unchanged.stderr
    assert "nothing to run, every asset is up to date" in unchanged.stdout
    assert "Assets materialized (0)" in unchanged.stdout
    with dg.DagsterInstance.from_config(str(e2i_home / "dagster")) as inst:
        observed = inst.fetch_observations(dg.AssetKey("trained_model"), limit=1).records
        assert observed and observed[0].asset_observation.metadata["reused"].value is True
        # Every asset recorded its own step's cost (a real peak: the process is > 50 MiB).
        costs = {}
        for key in inst.get_asset_keys():
            meta = inst.get_latest_materialization_event(key).asset_materialization.metadata
            assert "step_peak_rss_scope" not in meta, key  # the peak was reset per step
            costs[key.to_user_string()] = (
                meta["step_seconds"].value,
                meta["step_peak_rss_mib"].value,
            )
        assert len(costs) == 26 and all(s > 0 and mib > 50 for s, mib in costs.values()), costs

    # A new landing file for one source: its raw table and what depends on it run again
    # (causal_paths feeds nothing else, which keeps this step short); the rest is reused.
    paths = generated.table("causal_paths")
    write_landing(e2i_home, "causal_paths", paths.iloc[: len(paths) - 5])
    third = _run(e2i_home)
    assert third.returncode == 0, third.stdout + third.stderr
    assert "ran      raw_causal_paths: landing file appeared: " in third.stdout
    assert "ran      causal_paths: upstream raw_causal_paths runs" in third.stdout
    assert "reused   raw_hcp_profiles: up to date" in third.stdout
    assert "reused   trained_model: up to date" in third.stdout
    assert "Assets materialized (2): causal_paths, raw_causal_paths" in third.stdout

    # One asset on demand, up to date or not; a name that is no asset is refused by name.
    one = _command(
        e2i_home, sys.executable, "-m", "e2i_platform.ops.run", "--select", "causal_paths"
    )
    assert one.returncode == 0, one.stdout + one.stderr
    assert "ran      causal_paths: --select" in one.stdout
    assert "Assets materialized (1): causal_paths" in one.stdout
    typo = _command(
        e2i_home, sys.executable, "-m", "e2i_platform.ops.run", "--select", "causal_path"
    )
    assert typo.returncode == 2 and "--select: unknown asset(s) causal_path;" in typo.stderr

    _assert_the_ui_lists_the_runs_and_stops_on_sigterm(e2i_home)


def _assert_a_run_of_the_code_location(home: Path) -> None:
    """make run's run is the UI's kind of run: created from workspace.yaml's code location
    (the one `make dev` serves), so the UI files it under the location (Overview
    timeline, re-execution); and the UI's own API reports it so."""
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget
    from dagster_graphql.test.utils import execute_dagster_graphql

    with dg.DagsterInstance.from_config(str(home / "dagster")) as inst:
        (run,) = inst.get_runs(filters=dg.RunsFilter(tags={"e2i/launched_by": "make run"}))
        assert run.remote_job_origin is not None, "an in-process run without a location"
        target = WorkspaceFileTarget(paths=[str(REPO / "workspace.yaml")])
        with WorkspaceProcessContext(inst, target) as process:
            context = process.create_request_context()
            assert run.remote_job_origin.location_name in context.code_location_names
            query = """query($runId: ID!) { runOrError(runId: $runId) { ... on Run {
                status repositoryOrigin { repositoryLocationName repositoryName } } } }"""
            reply = execute_dagster_graphql(context, query, {"runId": run.run_id})
        origin = reply.data["runOrError"]["repositoryOrigin"]
        assert origin == {
            "repositoryLocationName": run.remote_job_origin.location_name,
            "repositoryName": "__repository__",
        }
        assert reply.data["runOrError"]["status"] == "FAILURE"  # the schema gate closed


def test_a_cli_run_without_dagster_home_is_refused(tmp_path, e2i_home):
    """`dagster asset materialize` with no DAGSTER_HOME (and no .env) would use a temporary
    instance that knows no gate result: the step refuses and says how to reach ours."""
    env = {k: v for k, v in _env(e2i_home).items() if k != "DAGSTER_HOME"}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    args = [DAGSTER, "asset", "materialize", "-m", "e2i_platform.definitions"]
    # A raw table (no upstream gate) and a gated child: each step refuses on its own.
    for asset in ("raw_patient_journeys", "patient_journeys"):
        refused = subprocess.run(
            [*args, "--select", asset],
            cwd=elsewhere,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        output = refused.stdout + refused.stderr
        assert refused.returncode != 0, output
        assert f"{asset} refused to run on the temporary Dagster instance" in output, output
        assert "keeps DAGSTER_HOME in .env" in output
        assert not (e2i_home / "warehouse" / f"{asset}.parquet").exists()


def _assert_the_ui_lists_the_runs_and_stops_on_sigterm(home: Path) -> None:
    """`make dev` on the home: its webserver lists every make run's run under the code
    location (what the Overview timeline groups by), and SIGTERM stops the webserver,
    the daemon and the code servers within 10 s."""
    import json
    import signal
    import socket
    import time
    import urllib.request

    import psutil

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dev = subprocess.Popen(
        [sys.executable, "-m", "e2i_platform.ops.dev", "--port", str(port)],
        cwd=REPO,
        env=_env(home),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        query = """{ runsOrError { ... on Runs { results { runId tags { key value }
            repositoryOrigin { repositoryLocationName } } } } }"""
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/graphql",
            data=json.dumps({"query": query}).encode(),
            headers={"Content-Type": "application/json"},
        )
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(request, timeout=10) as reply:
                    runs = json.load(reply)["data"]["runsOrError"]["results"]
                break
            except OSError:
                assert dev.poll() is None and time.monotonic() < deadline, "make dev did not start"
                time.sleep(1)
        ours = [r for r in runs if {"key": "e2i/launched_by", "value": "make run"} in r["tags"]]
        assert len(ours) >= 4, runs  # every make run above that had something to run
        assert {r["repositoryOrigin"]["repositoryLocationName"] for r in ours} == {
            "e2i_platform.definitions"
        }
        group = [dev.pid, *(p.pid for p in psutil.Process(dev.pid).children(recursive=True))]
    finally:
        started = time.monotonic()
        dev.send_signal(signal.SIGTERM)
        dev.wait(timeout=30)
        stopped = time.monotonic() - started
    assert dev.returncode == 0
    assert stopped <= 10, f"make dev took {stopped:.1f} s to stop"
    left = [p for p in group if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
    assert not left, [psutil.Process(p).cmdline() for p in left]
