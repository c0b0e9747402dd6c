"""Configuration: substitution, environment overrides, errors that name file and key."""

from pathlib import Path

import pytest
import yaml

from e2i_platform.settings import ConfigError, load, load_settings


def _edit(path: Path, mutate) -> None:
    data = yaml.safe_load(path.read_text())
    mutate(data)
    path.write_text(yaml.safe_dump(data))


def test_defaults_load_and_resolve_home_from_environment(e2i_home):
    s = load_settings()
    assert s.home == e2i_home
    assert s.env == "local"
    assert s.platform.executor.max_concurrent == 2
    assert s.platform.generator.patients == 300  # ${E2I_PATIENTS:-5000} from the env


def test_variable_default_applies_when_unset(e2i_home, monkeypatch):
    monkeypatch.delenv("E2I_PATIENTS")
    assert load_settings().platform.generator.patients == 5000


def test_unknown_key_names_file_and_key_path(config_copy, e2i_home):
    _edit(
        config_copy / "quality.yaml",
        lambda d: d["tables"]["patient_journeys"]["row_count"].update(maxx=3),
    )
    with pytest.raises(ConfigError) as err:
        load_settings()
    msg = str(err.value)
    assert str(config_copy / "quality.yaml") in msg
    assert "tables.patient_journeys.row_count.maxx" in msg
    assert "Extra inputs are not permitted" in msg


def test_wrong_type_names_file_and_key(config_copy, e2i_home):
    _edit(config_copy / "platform.yaml", lambda d: d["executor"].update(max_concurrent="many"))
    with pytest.raises(ConfigError, match=r"platform\.yaml: executor\.max_concurrent: .*integer"):
        load_settings()


def test_missing_required_key_names_file_and_key(config_copy, e2i_home):
    _edit(config_copy / "platform.yaml", lambda d: d["generator"].pop("seed"))
    with pytest.raises(ConfigError, match=r"platform\.yaml: generator\.seed: Field required"):
        load_settings()


def test_unset_variable_without_default_is_an_error(config_copy, e2i_home, monkeypatch):
    _edit(config_copy / "platform.yaml", lambda d: d.update(home="${E2I_TEST_NOT_SET}"))
    monkeypatch.delenv("E2I_TEST_NOT_SET", raising=False)
    with pytest.raises(
        ConfigError,
        match=r"platform\.yaml: home: environment variable "
        r"E2I_TEST_NOT_SET is not set",
    ):
        load_settings()


def test_environment_file_overrides_and_its_errors_name_it(config_copy, e2i_home, monkeypatch):
    monkeypatch.setenv("E2I_ENV", "prod")
    prod = load("platform")
    assert prod.instance.storage == "postgres"
    assert prod.generator.patients == 300  # not overridden: base value kept
    _edit(
        config_copy / "env" / "prod.yaml",
        lambda d: d["platform"]["instance"].update(storage="oracle"),
    )
    with pytest.raises(ConfigError) as err:
        load("platform")
    assert f"{config_copy / 'env' / 'prod.yaml'}: instance.storage" in str(err.value)


def test_unknown_environment_is_an_error(e2i_home, monkeypatch):
    monkeypatch.setenv("E2I_ENV", "staging")
    with pytest.raises(ConfigError, match=r"env/staging\.yaml: E2I_ENV='staging'"):
        load_settings()


def test_quality_rules_must_match_the_contract(config_copy, e2i_home):
    _edit(
        config_copy / "quality.yaml",
        lambda d: d["tables"]["hcp_profiles"].update(null_fraction={"npi": {"max": 0.1}}),
    )
    with pytest.raises(ConfigError, match=r"null_fraction\.npi: the contract makes it required"):
        load_settings()


def test_invalid_yaml_names_the_file(config_copy, e2i_home):
    (config_copy / "quality.yaml").write_text("tables: [unclosed\n")
    with pytest.raises(ConfigError, match=r"quality\.yaml: not valid YAML"):
        load_settings()


def test_make_run_keeps_dagster_home_in_dotenv_for_the_default_home_only(tmp_path, monkeypatch):
    from e2i_platform.ops.instance import write_dotenv
    from e2i_platform.settings.loader import REPO_ROOT

    dotenv = tmp_path / ".env"
    dotenv.write_text("REDIS_URL=redis://127.0.0.1:6379/0\nDAGSTER_HOME=/old/place\n")
    monkeypatch.delenv("E2I_HOME", raising=False)
    default = load_settings()
    assert default.home.resolve() == (REPO_ROOT / ".e2i").resolve()
    assert write_dotenv(default, default.home / "dagster", dotenv)
    lines = dotenv.read_text().splitlines()
    # Other variables stay; DAGSTER_HOME is replaced, once.
    assert lines == [
        "REDIS_URL=redis://127.0.0.1:6379/0",
        f"DAGSTER_HOME={default.home / 'dagster'}",
    ]

    # Another home is somebody's deliberate choice (a test's): the CLIs are not redirected.
    monkeypatch.setenv("E2I_HOME", str(tmp_path / "elsewhere"))
    assert not write_dotenv(load_settings(), tmp_path / "elsewhere" / "dagster", dotenv)
    assert dotenv.read_text().splitlines() == lines


def test_the_default_homes_feast_paths_are_the_committed_yamls(tmp_path):
    """The registry records online tables by path: the platform must name them as the plain
    `feast` CLI in feature_repo/ does (feature_store.yaml's relative paths), or `feast
    plan` lists every table as a change."""
    from e2i_platform.resources.feast import FeastResource
    from e2i_platform.settings.loader import REPO_ROOT

    committed = yaml.safe_load((REPO_ROOT / "feature_repo" / "feature_store.yaml").read_text())
    ours = FeastResource(home=str(REPO_ROOT / ".e2i"), project="e2i", online_store="sqlite")
    values = ours.config_values()
    assert values["registry"]["path"] == committed["registry"]["path"]
    assert values["online_store"]["path"] == committed["online_store"]["path"]
    # Any other home: the same files, reached from the repository.
    other = ours.model_copy(update={"home": str(tmp_path / "h")}).repo_config()
    db = (other.repo_path / other.online_store.path).resolve()
    assert db == (tmp_path / "h" / "feast" / "online_store.db").resolve()


def test_sources_default_to_auto_locally_and_to_landing_in_prod(e2i_home, monkeypatch, config_copy):
    from e2i_platform.definitions import build_definitions

    def policies() -> dict[str, str]:
        source = build_definitions(load_settings()).resources["source"]
        return {t: source.policy(t) for t in ("triggers", "patient_journeys")}

    assert policies() == {"triggers": "auto", "patient_journeys": "auto"}
    monkeypatch.setenv("E2I_ENV", "prod")
    assert policies() == {"triggers": "landing", "patient_journeys": "landing"}
    _edit(config_copy / "platform.yaml", lambda d: d["sources"].update(tables={"triggers": "auto"}))
    assert policies() == {"triggers": "auto", "patient_journeys": "landing"}


def test_a_source_policy_for_an_unknown_table_or_kind_is_named(config_copy, e2i_home):
    _edit(config_copy / "platform.yaml", lambda d: d["sources"].update(tables={"trigers": "auto"}))
    with pytest.raises(
        ConfigError, match=r"platform\.yaml: sources: .*unknown input table.*trigers"
    ):
        load_settings()
    _edit(config_copy / "platform.yaml", lambda d: d["sources"].update(tables={"triggers": "file"}))
    with pytest.raises(
        ConfigError, match=r"platform\.yaml: sources\.tables\.triggers: Input should be"
    ):
        load_settings()


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("s3://key:hunter2@bucket/prefix", "must not carry credentials"),
        ("s3://bucket/prefix?endpoint_url=http://x", "must not carry credentials"),
        ("/mnt/shared", "expected s3://bucket"),
        ("gs://bucket/prefix", "expected s3://bucket"),
        ("http://key:hunter2@minio:9000/bucket", "must not carry credentials"),
        ("https://minio:9000/bucket?token=hunter2", "must not carry credentials"),
    ],
)
def test_a_store_url_is_a_bucket_without_credentials(e2i_home, monkeypatch, url, said):
    monkeypatch.setenv("E2I_STORE_URL", url)
    with pytest.raises(ConfigError, match=r"platform\.yaml: store") as err:
        load_settings()
    assert said in str(err.value)
    assert "hunter2" not in str(err.value)  # the error never repeats a secret


def test_a_bucket_url_is_a_store(e2i_home, monkeypatch):
    monkeypatch.setenv("E2I_STORE_URL", "s3://bucket/prefix")
    assert load_settings().platform.store.url == "s3://bucket/prefix"
