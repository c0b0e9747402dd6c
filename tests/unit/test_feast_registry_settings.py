"""Which Feast registry the settings select, and the SQL registry's URL kept out of
everything written: a missing URL is a failure naming its variable, in a run (the
definitions' EnvVar) and outside one (the Feast CLI's wrappers)."""

from __future__ import annotations

import dagster as dg
import pytest

from e2i_platform.resources.feast import FeastResource

VARIABLE = "E2I_FEAST_REGISTRY_URL"
URL = "postgresql://feast:s3cret@db.internal:5433/registry?sslmode=require"


def test_sql_without_its_url_fails_naming_the_variable(e2i_home, monkeypatch):
    from e2i_platform.settings import load_settings

    monkeypatch.setenv("E2I_FEAST_REGISTRY", "sql")
    monkeypatch.delenv(VARIABLE, raising=False)
    feast = FeastResource.for_settings(load_settings())
    assert feast.registry == "sql"
    for use in (feast.config_values, feast.cli_config, feast.repo_config, feast.store):
        with pytest.raises(dg.Failure, match=VARIABLE):
            use()
    assert not (e2i_home / "feast" / "registry.db").exists()


def test_an_env_var_url_that_is_not_set_fails_naming_the_variable(monkeypatch, tmp_path):
    """As the definitions give it: resolved when a run builds its resources."""
    monkeypatch.delenv(VARIABLE, raising=False)
    feast = FeastResource(
        home=str(tmp_path),
        project="p",
        online_store="sqlite",
        registry="sql",
        registry_url=dg.EnvVar(VARIABLE),
    )
    with (
        pytest.raises(dg.DagsterInvalidConfigError, match=VARIABLE),
        dg.build_resources({"feast": feast}),
    ):
        pass


def test_the_sql_registry_config_holds_the_variable_not_the_url(e2i_home, monkeypatch):
    from e2i_platform.settings import load_settings

    monkeypatch.setenv("E2I_FEAST_REGISTRY", "sql")
    monkeypatch.setenv(VARIABLE, URL)
    feast = FeastResource.for_settings(load_settings())
    registry = feast.config_values()["registry"]
    assert registry == {
        "registry_type": "sql",
        "path": "${E2I_FEAST_REGISTRY_URL}",
        "cache_ttl_seconds": 60,
        "sqlalchemy_config_kwargs": {"echo": False, "pool_pre_ping": True},
    }
    path, env = feast.cli_config()
    assert "s3cret" not in path.read_text() and "registry.db" not in path.read_text()
    # psycopg 3 is not installed: a bare postgresql:// gets the psycopg2 driver.
    expected = URL.replace("postgresql://", "postgresql+psycopg2://")
    assert env[VARIABLE] == expected
    config = feast.repo_config()  # what the platform's steps give Feast, in memory
    assert config.registry.registry_type == "sql"
    assert config.registry.path == expected
    assert feast.describe()["registry"] == "sql postgresql+psycopg2://db.internal:5433/registry"
    assert "s3cret" not in repr(feast.describe())


def test_the_file_registry_stays_the_default(e2i_home):
    from e2i_platform.settings import load_settings

    feast = FeastResource.for_settings(load_settings())
    assert feast.registry == "file"
    registry = feast.config_values()["registry"]
    assert registry["registry_type"] == "file" and registry["path"].endswith("registry.db")
    assert feast.describe()["registry"] == str(e2i_home / "feast" / "registry.db")
    assert not feast.has_registry()


def test_an_unknown_registry_kind_is_refused(tmp_path):
    feast = FeastResource(home=str(tmp_path), project="p", online_store="sqlite", registry="s3")
    with pytest.raises(dg.Failure, match="registry 's3'"):
        feast.config_values()


def test_the_definitions_fields_keep_the_url_an_env_var(e2i_home, monkeypatch):
    """`FeastResource.registry_fields` as the definitions use it: the run resolves the
    URL; the resource's configuration names only the variable."""
    from e2i_platform.settings import load_settings

    monkeypatch.setenv("E2I_FEAST_REGISTRY", "sql")
    monkeypatch.setenv(VARIABLE, URL)
    fields = FeastResource.registry_fields(load_settings())
    assert fields == {"registry": "sql", "registry_url": dg.EnvVar(VARIABLE)}
    feast = FeastResource(home=str(e2i_home), project="p", online_store="sqlite", **fields)
    assert "s3cret" not in repr(feast.get_resource_definition().config_schema.default_value)
    with dg.build_resources({"feast": feast}) as resources:
        assert resources.feast.registry_connection().endswith(
            "@db.internal:5433/registry?sslmode=require"
        )

    monkeypatch.setenv("E2I_FEAST_REGISTRY", "file")
    assert FeastResource.registry_fields(load_settings()) == {
        "registry": "file",
        "registry_url": None,
    }
