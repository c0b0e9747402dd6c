"""The Feast registry in Feast's SQL registry on the test's own PostgreSQL database:
what one machine applies (the `feature_registry` asset's code path), another machine
with an empty home of its own reads back, and no registry file is written on either.
Two projects in one database stay apart. The URL carries a password (trust
authentication ignores it) that must not reach a file, the asset's metadata or the
run's events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import dagster as dg
import pandas as pd
import pytest

from e2i_platform.features.specs import (
    CREATED_TIMESTAMP,
    EVENT_TIMESTAMP,
    FEATURE_SERVICE,
    SERVICE_VIEWS,
    VIEWS,
)

PASSWORD = "n0t-for-files"
VARIABLE = "E2I_FEAST_REGISTRY_URL"


def _with_password(url: str) -> str:
    parts = urlsplit(url)
    netloc = f"{parts.username}:{PASSWORD}@{parts.hostname}:{parts.port or 5432}"
    return urlunsplit(parts._replace(netloc=netloc))


@pytest.fixture
def registry_url(psycopg2_url, monkeypatch) -> str:
    url = _with_password(psycopg2_url)
    monkeypatch.setenv(VARIABLE, url)
    return url


def _resource(home: Path, project: str = "e2i_sql_test", url=None):
    from e2i_platform.resources.feast import FeastResource

    return FeastResource(
        home=str(home),
        project=project,
        online_store="sqlite",
        registry="sql",
        registry_url=url,
    )


def _files(*homes: Path) -> list[Path]:
    return [p for home in homes if home.exists() for p in home.rglob("*") if p.is_file()]


def _no_secret(text: str, url: str) -> None:
    assert url not in text
    assert PASSWORD not in text


def test_a_second_machine_reads_what_the_first_applied(tmp_path, registry_url):
    from e2i_platform.features.assets import apply_repository, registry_fingerprint
    from e2i_platform.features.registry_paths import offline_source

    first, second = tmp_path / "machine_a", tmp_path / "machine_b"
    objects, fingerprint = apply_repository(_resource(first, url=registry_url))

    other = _resource(second, url=registry_url)  # an empty home, as on another machine
    assert not second.exists()
    store = other.store()
    applied = {o.name: o for o in objects}
    views = {v.name: v for v in store.list_feature_views()}
    assert set(views) == set(VIEWS)
    for name, view in views.items():
        assert view == applied[name]  # name, entities, schema, ttl, source, tags
        assert [f.name for f in view.features] == list(VIEWS[name].feature_names)
    (service,) = store.list_feature_services()
    assert service.name == FEATURE_SERVICE
    assert [p.name for p in service.feature_view_projections] == list(SERVICE_VIEWS)
    assert {e.name for e in store.list_entities()} >= {"patient", "hcp", "brand", "region"}
    assert registry_fingerprint(store) == fingerprint
    assert other.registry_problem() is None

    # The registry records the first machine's offline files; the second reads its own.
    view = "patient_features"
    assert store.get_feature_view(view).batch_source.path == str(
        first / "warehouse" / f"{view}.parquet"
    )
    assert offline_source(store, view).path == str(
        second.resolve() / "warehouse" / f"{view}.parquet"
    )

    files = _files(first, second)
    assert not [p for p in files if p.name == "registry.db"]
    for path in files:  # the SQLite online store too
        assert PASSWORD.encode() not in path.read_bytes(), path


def test_two_projects_in_one_database_stay_apart(tmp_path, registry_url):
    from e2i_platform.features.assets import apply_repository

    apply_repository(_resource(tmp_path / "a", project="project_one", url=registry_url))
    two = _resource(tmp_path / "b", project="project_two", url=registry_url)
    assert two.store().list_feature_views() == []
    assert "holds no feature view of project project_two" in two.registry_problem()

    # project_two applies one view of the same name: project_one keeps its four.
    from e2i_platform.features.repo_objects import build_objects

    wanted = {"hcp", "hcp_features"}
    two.store().apply([o for o in build_objects(two.offline_dir) if o.name in wanted])
    one = _resource(tmp_path / "c", project="project_one", url=registry_url).store()
    assert {v.name for v in one.list_feature_views()} == set(VIEWS)
    again = _resource(tmp_path / "d", project="project_two", url=registry_url).store()
    assert [v.name for v in again.list_feature_views()] == ["hcp_features"]


def test_the_cli_config_names_the_variable_and_feast_reads_it(tmp_path, registry_url):
    """`make feast`: the written file says ${E2I_FEAST_REGISTRY_URL}; Feast's own loader
    substitutes it from the environment the wrapper passes."""
    import os

    from feast.repo_config import load_repo_config

    resource = _resource(tmp_path / "home", url=registry_url)
    path, env = resource.cli_config()
    text = path.read_text()
    _no_secret(text, registry_url)
    assert "path: ${E2I_FEAST_REGISTRY_URL}" in text
    assert "registry.db" not in text
    assert env[VARIABLE] == registry_url  # already postgresql+psycopg2

    os.environ[VARIABLE] = env[VARIABLE]  # monkeypatched by the fixture: restored after
    config = load_repo_config(Path(resource.repo_path), path)
    assert config.registry.registry_type == "sql"
    assert config.registry.path == registry_url
    assert config.registry.sqlalchemy_config_kwargs["pool_pre_ping"] is True


def test_the_asset_applies_to_the_sql_registry(e2i_home, tmp_path, registry_url):
    """The `feature_registry` asset on a run's resources (the URL an EnvVar, as in the
    definitions): success, and no secret in its metadata or the run's events."""
    from e2i_platform.features.assets import feature_registry
    from e2i_platform.resources.config import ConfigResource
    from e2i_platform.resources.feast import FeastResource
    from e2i_platform.settings import load_settings

    settings = load_settings()
    feast = FeastResource(
        home=str(e2i_home),
        project="e2i_asset_test",
        online_store="sqlite",
        registry="sql",
        registry_url=dg.EnvVar(VARIABLE),
    )
    config = ConfigResource(config_dir=str(settings.config_dir), env=settings.env)
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [feature_registry],
            resources={"feast": feast, "e2i_config": config},
            instance=instance,
        )
        assert result.success
        (materialization,) = result.asset_materializations_for_node("feature_registry")
        metadata = {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}
        parts = urlsplit(registry_url)
        where = f"{parts.scheme}://{parts.hostname}:{parts.port}{parts.path}"
        assert metadata["store"]["registry"] == f"sql {where}"  # no user, no password
        _no_secret(repr(metadata), registry_url)
        events = instance.all_logs(result.run_id)
        _no_secret("\n".join(repr(e) for e in events), registry_url)
        _no_secret(repr(instance.get_run_by_id(result.run_id).run_config), registry_url)

    reader = _resource(tmp_path / "elsewhere", "e2i_asset_test", registry_url).store()
    assert {v.name for v in reader.list_feature_views()} == set(VIEWS)
    assert not [p for p in _files(e2i_home, tmp_path / "elsewhere") if p.name == "registry.db"]


def _offline_table(home: Path, view: str, at: datetime, entities: int) -> None:
    spec = VIEWS[view]
    values = {"float": [1.5] * entities, "int": list(range(entities)), "str": ["x"] * entities}
    frame = pd.DataFrame({"patient_id": [f"PAT{i:08d}" for i in range(entities)]})
    for column in (EVENT_TIMESTAMP, CREATED_TIMESTAMP):
        frame[column] = pd.Series([pd.Timestamp(at)] * entities, dtype="datetime64[ns, UTC]")
    for feature in spec.features:
        frame[feature.name] = values[feature.dtype]
    (home / "warehouse").mkdir(parents=True, exist_ok=True)
    frame[list(spec.columns)].to_parquet(home / "warehouse" / f"{view}.parquet", index=False)


def test_the_coverage_clock_one_machine_moves_is_the_others(tmp_path, registry_url):
    """`online_features` records each window in the registry (`materialize_view`): on the
    SQL registry another machine's planner sees the same coverage clock."""
    from e2i_platform.features.assets import apply_repository
    from e2i_platform.features.materialize import Window, materialize_view

    view, now = "patient_features", datetime.now(UTC).replace(microsecond=0)
    writer = _resource(tmp_path / "machine_a", url=registry_url)
    _offline_table(Path(writer.home), view, now - timedelta(hours=2), entities=5)
    apply_repository(writer)
    store = writer.store()
    done = materialize_view(store, view, Window(now - timedelta(days=1), now))
    assert done.entities_written == 5

    reader = _resource(tmp_path / "machine_b", url=registry_url).store()
    assert reader.get_feature_view(view).most_recent_end_time == now
    assert reader.get_feature_view("hcp_features").most_recent_end_time is None
