"""Moving a deployment (executor, shared stores, registry kind, home) changes no asset's
code version: values made before are reused; a computed setting still changes it."""

from __future__ import annotations

from e2i_platform.lib.versions import GROUP_SECTIONS, platform_version
from e2i_platform.settings import load_settings


def versions() -> dict[str, str]:
    settings = load_settings()
    return {group: platform_version(settings, group) for group in GROUP_SECTIONS}


def test_where_steps_run_and_values_live_is_not_what_they_compute(e2i_home, monkeypatch, tmp_path):
    before = versions()
    monkeypatch.setenv("E2I_EXECUTOR", "celery")
    monkeypatch.setenv("E2I_CELERY_QUEUE", "elsewhere")
    monkeypatch.setenv("E2I_STORE_URL", "s3://bucket/prefix")
    monkeypatch.setenv("E2I_FEAST_REGISTRY", "sql")
    monkeypatch.setenv("E2I_MAX_RETRIES", "5")
    monkeypatch.setenv("E2I_HOME", str(tmp_path / "moved"))
    assert versions() == before

    monkeypatch.setenv("E2I_SEED", "12")  # what the generator makes: ingest and after
    changed = versions()
    assert changed["ingest"] != before["ingest"] and changed["quality"] != before["quality"]
    assert changed["training"] == before["training"]
