"""Shared fixtures: a private E2I_HOME, small generated data, real Dagster instances.

Every test gets its own E2I_HOME (landing, warehouse) and, where it runs assets,
its own Dagster instance. Data come from the product's generator at a small size.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from e2i_platform.ingest.generator import Generator, GeneratorSpec, floor_anchor
from e2i_platform.settings import Settings, load_settings
from e2i_platform.settings.loader import REPO_ROOT

SMALL = {"E2I_PATIENTS": "300", "E2I_HCPS": "40", "E2I_SEED": "11", "E2I_HPO_TRIALS": "6"}
# Where a developer's shell may point at shared servers: a test never writes there.
SHARED = (
    "MLFLOW_TRACKING_URI",
    "OPTUNA_STORAGE_URL",
    "E2I_RUN_MODE",
    "E2I_MLFLOW_ENABLED",
    "E2I_EXECUTOR",
    "E2I_CELERY_BROKER",
    "E2I_CELERY_QUEUE",
    "E2I_STORE_URL",
    "E2I_FEAST_REGISTRY",
    "E2I_FEAST_REGISTRY_URL",
)


def use_home(
    mp: pytest.MonkeyPatch, home: Path, config: Path | None = None, sizes: dict = SMALL
) -> str:
    """Point the settings at a private home (and a config copy, if given), small sizes
    and no shared server; returns the anchor it set. Generated timelines end now, not at
    the hour's floor: a test that straddles an hour would otherwise see hour-old
    "current" data (freshness WARN)."""
    mp.setenv("E2I_HOME", str(home))
    if config is None:
        mp.delenv("E2I_CONFIG_DIR", raising=False)
    else:
        mp.setenv("E2I_CONFIG_DIR", str(config))
    mp.delenv("E2I_ENV", raising=False)
    for key, value in sizes.items():
        mp.setenv(key, value)
    for key in SHARED:
        mp.delenv(key, raising=False)
    anchor = datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="seconds")
    mp.setenv("E2I_ANCHOR", anchor)
    return anchor


@pytest.fixture
def e2i_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "e2i"
    home.mkdir()
    use_home(monkeypatch, home)
    return home


@pytest.fixture
def config_copy(e2i_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A writable copy of config/, used by the settings of tests that edit thresholds."""
    target = tmp_path / "config"
    shutil.copytree(REPO_ROOT / "config", target)
    monkeypatch.setenv("E2I_CONFIG_DIR", str(target))
    return target


@pytest.fixture
def settings(e2i_home: Path) -> Settings:
    return load_settings()


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        yield inst


@pytest.fixture(scope="session")
def generated() -> Generator:
    """Small generated tables, anchored now: what the generator produces by default."""
    now = datetime.now(UTC).replace(tzinfo=None)
    spec = GeneratorSpec(
        seed=int(SMALL["E2I_SEED"]),
        patients=int(SMALL["E2I_PATIENTS"]),
        hcps=int(SMALL["E2I_HCPS"]),
        history_days=730,
        anchor=floor_anchor(now, "none"),
    )
    return Generator(spec)


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow SQLite DB with the schema created once (~1.4 s), copied by every test."""
    from mlflow.tracking import MlflowClient

    db = tmp_path_factory.mktemp("mlflow_template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture
def tracking_db(tmp_path: Path, template_db: Path) -> str:
    """A fresh MLflow SQLite tracking URI (a copy of the template) under the test's tmp."""
    import shutil

    db = tmp_path / "mlflow" / "mlflow.db"
    db.parent.mkdir()
    shutil.copyfile(template_db, db)
    return f"sqlite:///{db}"
