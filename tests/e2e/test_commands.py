"""The commands people use: `make run`'s entry point and `dagster asset materialize`
share one instance under E2I_HOME, and the gate holds between them."""

import os
import subprocess
import sys
from pathlib import Path

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


def _materialize(home: Path, selection: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [DAGSTER, "asset", "materialize", "-m", "e2i_platform.definitions", "--select", selection],
        cwd=REPO,
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_make_run_then_cli_child_run_is_refused_until_fixed(e2i_home, generated):
    good = generated.table("patient_journeys")
    bad = good.copy()
    bad.loc[bad.index[:3], "age_group"] = "90+"
    write_landing(e2i_home, "patient_journeys", bad)

    main = subprocess.run(
        [sys.executable, "-m", "e2i_platform.ops.run"],
        cwd=REPO,
        env=_env(e2i_home),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert main.returncode == 1, main.stdout + main.stderr
    assert "FAIL (ERROR) raw_patient_journeys.schema" in main.stdout
    assert "PASS         raw_hcp_profiles.schema" in main.stdout
    assert "Open the UI: make dev" in main.stdout
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
