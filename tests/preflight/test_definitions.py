"""Preflight: the code compiles, the definitions load light, and the graph is the spec's."""

import compileall
import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from e2i_platform.contract import INPUT_TABLES

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("great_expectations", "feast", "mlflow", "optuna", "lightgbm", "sklearn", "pandera")


def test_everything_compiles():
    for folder in ("e2i_platform", "tests", "bench"):
        assert compileall.compile_dir(REPO / folder, quiet=1, force=True), folder


def test_loading_definitions_imports_no_heavy_library():
    """A fresh interpreter builds the definitions; none of the heavy libraries load."""
    code = (
        "import sys, json\n"
        "from e2i_platform.definitions import defs\n"
        "d = defs()\n"
        "d.get_repository_def()\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_dagster_definitions_validate_passes(tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "E2I_HOME": str(tmp_path / "e2i")}
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    out = subprocess.run(
        [
            str(Path(sys.executable).parent / "dagster"),
            "definitions",
            "validate",
            "-w",
            "workspace.yaml",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Validation successful" in out.stdout + out.stderr


def test_asset_graph_matches_the_spec(e2i_home):
    """Asset and check names are an interface (SPEC §3): a change shows up here."""
    from e2i_platform.definitions import defs

    graph = defs().get_repository_def().asset_graph
    groups = {k.to_user_string(): graph.get(k).group_name for k in graph.get_all_asset_keys()}
    assert groups == {
        **{f"raw_{t}": "ingest" for t in INPUT_TABLES},
        **{t: "quality" for t in INPUT_TABLES},
        **dict.fromkeys(
            [
                "patient_features",
                "hcp_features",
                "trigger_features",
                "market_features",
                "feature_registry",
                "online_features",
            ],
            "features",
        ),
        **dict.fromkeys(
            ["training_dataset", "hpo_study", "trained_model", "model_evaluation"], "training"
        ),
        **dict.fromkeys(["champion_model", "patient_risk_scores"], "promotion"),
    }
    checks = {
        (k.asset_key.to_user_string(), k.name): graph.get_check_spec(k).blocking
        for k in graph.asset_check_keys
    }
    expected = {(f"raw_{t}", "schema") for t in INPUT_TABLES}
    expected |= {(t, "expectations") for t in INPUT_TABLES}
    expected |= {
        ("patient_journeys", "references_resolve"),
        ("treatment_events", "references_resolve"),
    }
    expected |= {("online_features", "freshness"), ("training_dataset", "no_leakage")}
    expected |= {
        ("model_evaluation", gate)
        for gate in (
            "quality_gate",
            "calibration_gate",
            "latency_gate",
            "fairness_gate",
            "cost_gate",
        )
    }
    expected |= {("patient_risk_scores", "schema")}
    assert checks == dict.fromkeys(expected, True)
    parents = {
        "patient_features": {"patient_journeys", "treatment_events"},
        "hcp_features": {"hcp_profiles", "patient_journeys", "treatment_events"},
        "trigger_features": {"triggers", "patient_journeys"},
        "market_features": {"business_metrics"},
        "feature_registry": {
            "patient_features",
            "hcp_features",
            "trigger_features",
            "market_features",
        },
        "online_features": {"feature_registry"},
        "training_dataset": {"patient_journeys", "treatment_events", "online_features"},
        "hpo_study": {"training_dataset"},
        "trained_model": {"training_dataset", "hpo_study"},
        "model_evaluation": {"training_dataset", "trained_model"},
        "champion_model": {"trained_model", "model_evaluation"},
        "patient_risk_scores": {"champion_model", "patient_journeys", "online_features"},
    }
    for asset, expected_parents in parents.items():
        node = graph.get(dg.AssetKey(asset))
        assert {k.to_user_string() for k in node.parent_keys} == expected_parents, asset
        assert node.description and node.automation_condition is not None
    for t in INPUT_TABLES:
        assert graph.get(dg.AssetKey(t)).parent_keys == {dg.AssetKey(f"raw_{t}")}
        assert graph.get(dg.AssetKey(t)).automation_condition is not None
        assert graph.get(dg.AssetKey(t)).description


def test_executor_is_capped_from_config(e2i_home, monkeypatch):
    from e2i_platform.definitions import defs

    monkeypatch.setenv("E2I_MAX_CONCURRENT", "3")
    from dagster._core.system_config.objects import ResolvedRunConfig

    from e2i_platform.ops.launch import IN_PROCESS

    job = defs().resolve_job_def("e2i_main")
    # UI and schedule runs: capped parallel processes by default.
    execution = ResolvedRunConfig.build(job, {}).execution
    assert execution.execution_engine_config["multiprocess"]["max_concurrent"] == 3
    # make run's run config picks one process for the whole run.
    execution = ResolvedRunConfig.build(job, IN_PROCESS).execution
    assert set(execution.execution_engine_config) == {"in_process"}


def test_the_code_location_serializes_as_a_code_server_sends_it(e2i_home):
    """The UI, the daemon and `make run` read the code location from a code server, which
    serializes the repository snapshot (a Python automation condition that passed for
    serializable once broke exactly this, while loading in process worked)."""
    from dagster._core.remote_representation.external_data import RepositorySnap
    from dagster_shared.serdes import deserialize_value, serialize_value

    from e2i_platform.definitions import defs

    repository = defs().get_repository_def()
    for deferred in (True, False):  # the UI asks for deferred snapshots, run creation not
        snap = deserialize_value(
            serialize_value(RepositorySnap.from_def(repository, defer_snapshots=deferred)),
            RepositorySnap,
        )
        gated = {n.asset_key.to_user_string(): n for n in snap.asset_nodes}["patient_journeys"]
        # Sent as a snapshot (the condition is evaluated where the code is), labelled.
        assert gated.automation_condition is None
        assert gated.automation_condition_snapshot.node_snapshot.name == "gated_eager"


def test_loading_and_snapshotting_the_location_prints_no_warning(e2i_home):
    """What a code server does on every reload (and `make dev` every minute) leaves no
    warning in the UI's log: loading the definitions and snapshotting them."""
    import subprocess
    import sys

    code = (
        "from dagster._core.remote_representation.external_data import RepositorySnap\n"
        "from e2i_platform.definitions import defs\n"
        "RepositorySnap.from_def(defs().get_repository_def())\n"
    )
    done = subprocess.run(
        [sys.executable, "-W", "default", "-c", code], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr, done.stderr


def test_the_command_lines_load_the_code_location_workspace_yaml_serves(e2i_home):
    """`make run`, `make rollback`, `make releases` and `make report` get their
    Definitions through `ops.location` (by the module pyproject.toml declares), not by
    importing the root: the same location as workspace.yaml's, built the same way."""
    import yaml

    from e2i_platform.definitions import defs
    from e2i_platform.ops.location import load_definitions, location_module
    from e2i_platform.ops.rollback import ROLLBACK_JOB

    (entry,) = yaml.safe_load((REPO / "workspace.yaml").read_text())["load_from"]
    assert location_module() == entry["python_module"]["module_name"]
    loaded = load_definitions()
    graph, expected = loaded.resolve_asset_graph(), defs().resolve_asset_graph()
    assert graph.get_all_asset_keys() == expected.get_all_asset_keys()
    assert graph.asset_check_keys == expected.asset_check_keys
    assert loaded.resolve_job_def(ROLLBACK_JOB).name == ROLLBACK_JOB
    assert {"source", "e2i_config", "mlflow"} <= set(loaded.resources)
