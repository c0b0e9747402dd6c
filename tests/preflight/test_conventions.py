"""Preflight: every asset of the loaded definitions carries its stage's owner and tags,
and kinds; the MLflow UI links point where the configuration says."""

import dagster as dg

from e2i_platform.lib.ownership import DOMAIN_TAG, STAGE_TAG, STAGES


def _graph():
    from e2i_platform.definitions import defs

    return defs().get_repository_def().asset_graph


def test_every_asset_has_its_stages_owner_tags_and_kinds(e2i_home):
    graph = _graph()
    keys = graph.get_all_asset_keys()
    assert {graph.get(k).group_name for k in keys} == set(STAGES)  # no stage without assets
    for key in keys:
        node, name = graph.get(key), key.to_user_string()
        stage = STAGES[node.group_name]
        assert list(node.owners) == [stage.owner], name
        assert node.tags[STAGE_TAG] == node.group_name, name
        assert node.tags[DOMAIN_TAG] == stage.domain, name
        assert node.kinds, name
        if node.io_manager_key == "warehouse":  # a table: Parquet in the warehouse
            assert "parquet" in node.kinds, name


def test_online_features_kind_is_the_store_in_use(e2i_home, monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert _graph().get(dg.AssetKey("online_features")).kinds == {"feast", "sqlite"}
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
    assert _graph().get(dg.AssetKey("online_features")).kinds == {"feast", "redis"}


def test_mlflow_ui_links_follow_the_configuration(e2i_home, monkeypatch):
    from e2i_platform.definitions import build_definitions
    from e2i_platform.lib.versions import platform_version
    from e2i_platform.resources.mlflow import MlflowResource
    from e2i_platform.settings import load_settings

    local = build_definitions(load_settings()).resources["mlflow"]
    assert local.ui_base == "http://127.0.0.1:5000"  # `mlflow ui` on the local store
    assert local.model_version_url(3) == (
        "http://127.0.0.1:5000/#/models/e2i_discontinuation/versions/3"
    )
    assert local.experiment_url("7") == "http://127.0.0.1:5000/#/experiments/7"
    before = {g: platform_version(load_settings(), g) for g in ("training", "promotion")}

    monkeypatch.setenv("E2I_MLFLOW_UI_URL", "https://mlflow.example.org/ui/")
    configured = build_definitions(load_settings()).resources["mlflow"]
    assert configured.ui_base == "https://mlflow.example.org/ui"
    # Where links point is not what is computed: no asset's code version changes.
    assert {g: platform_version(load_settings(), g) for g in before} == before

    monkeypatch.delenv("E2I_MLFLOW_UI_URL")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://user:secret@tracking.example.org:8443")
    # The URI stays an EnvVar in the definitions; a run resolves it.
    server = build_definitions(load_settings()).resources["mlflow"]
    resolved = server.process_config_and_initialize()
    assert resolved.ui_base == "https://tracking.example.org:8443"  # the server, no password
    off = MlflowResource(
        enabled=False, tracking_uri="sqlite:///x.db", experiment="e", registered_model="m"
    )
    assert off.ui_links(run_id="r", model_version="1") == {}
