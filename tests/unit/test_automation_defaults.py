"""What a daemon starts by itself, as the daemon reads it (the code location's
snapshot), in each environment, and README's table says the same."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def _defaults_seen_by_the_daemon() -> dict[str, str]:
    from dagster._core.remote_representation.external_data import RepositorySnap

    from e2i_platform.definitions import defs

    snap = RepositorySnap.from_def(defs().get_repository_def())
    # The snapshot leaves STOPPED out (None), as Dagster keeps ids stable that way.
    return {
        s.name: s.default_status.value if s.default_status else "STOPPED"
        for s in (*snap.schedules, *snap.sensors)
        if s.name != "default_automation_condition_sensor"
    }


def _readme_defaults(column: int) -> dict[str, str]:
    rows = re.findall(r"^\| (?:schedule|sensor) `(\w+)` \|.*\| (.+) \|$", README.read_text(), re.M)
    return {
        name: "RUNNING" if cell.split(" / ")[column].strip("* ") == "yes" else "STOPPED"
        for name, cell in rows
    }


@pytest.mark.parametrize(("env", "column"), [("local", 0), ("prod", 1)])
def test_the_default_statuses_are_decided_and_documented(e2i_home, monkeypatch, env, column):
    monkeypatch.setenv("E2I_ENV", env)
    seen = _defaults_seen_by_the_daemon()
    schedules = {
        "e2i_main_schedule",
        "feature_incremental_schedule",
        "feature_full_refresh_schedule",
    }
    expected = {name: "RUNNING" if env == "prod" else "STOPPED" for name in schedules}
    expected |= {
        "feature_freshness_sensor": "RUNNING",
        "alert_sensor": "RUNNING",
        "gated_automation_sensor": "STOPPED",
    }
    assert seen == expected
    assert _readme_defaults(column) == seen


def test_schedules_running_is_an_environment_choice(e2i_home, monkeypatch):
    monkeypatch.setenv("E2I_SCHEDULES_RUNNING", "true")
    assert _defaults_seen_by_the_daemon()["e2i_main_schedule"] == "RUNNING"
