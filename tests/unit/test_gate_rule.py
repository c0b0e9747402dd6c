"""The verdict rule's own edges: the guard fails closed, unknown checks have no
configuration, and a configuration change changes exactly the verdicts it concerns."""

from types import SimpleNamespace

import dagster as dg
import pytest

from e2i_platform.lib.graph import GraphUnavailable, location_graph
from e2i_platform.lib.versions import judged_version

from support import edit_yaml


def test_a_job_without_the_location_graph_is_refused():
    class ScopedGraphWithoutSource:  # what a future Dagster might hand us
        pass

    job = SimpleNamespace(
        name="some_job", asset_layer=SimpleNamespace(asset_graph=ScopedGraphWithoutSource())
    )
    with pytest.raises(GraphUnavailable, match="cannot determine the code location's asset graph"):
        location_graph(job)


def test_a_real_job_has_the_location_graph(settings):
    from e2i_platform.definitions import build_definitions

    defs = build_definitions(settings)
    job = defs.resolve_implicit_global_asset_job_def()
    graph = location_graph(job)
    assert dg.AssetCheckKey(dg.AssetKey("online_features"), "freshness") in graph.asset_check_keys


def _key(asset: str, name: str) -> dg.AssetCheckKey:
    return dg.AssetCheckKey(dg.AssetKey(asset), name)


def test_judged_versions_follow_only_the_configuration_each_check_applies(e2i_home, config_copy):
    from e2i_platform.settings import load_settings

    before = load_settings()
    edit_yaml(config_copy, "promotion", ("quality_gate", "min_roc_auc"), 0.99)
    after = load_settings()
    changed = _key("model_evaluation", "quality_gate")
    same = [
        _key("model_evaluation", "calibration_gate"),
        _key("patient_journeys", "expectations"),
        _key("raw_patient_journeys", "schema"),
        _key("online_features", "freshness"),
    ]
    assert judged_version(before, changed) != judged_version(after, changed)
    for key in same:
        assert judged_version(before, key) == judged_version(after, key), key
    with pytest.raises(KeyError, match="no configuration is known"):
        judged_version(after, _key("patient_journeys", "made_up_check"))


def test_a_freshness_verdict_is_bound_to_the_store_it_measured(e2i_home, monkeypatch):
    from e2i_platform.settings import load_settings

    freshness = _key("online_features", "freshness")
    sqlite = judged_version(load_settings(), freshness)
    monkeypatch.setenv("E2I_ONLINE_STORE", "redis")
    monkeypatch.setenv("REDIS_URL", "redis://:one@127.0.0.1:6379/0")
    redis_db0 = judged_version(load_settings(), freshness)
    monkeypatch.setenv("REDIS_URL", "redis://:two@127.0.0.1:6379/0")
    assert judged_version(load_settings(), freshness) == redis_db0  # a password is no store
    monkeypatch.setenv("REDIS_URL", "redis://:one@127.0.0.1:6379/3")
    redis_db3 = judged_version(load_settings(), freshness)
    assert len({sqlite, redis_db0, redis_db3}) == 3


def test_leakage_limits_void_only_the_leakage_verdict(e2i_home, config_copy):
    from e2i_platform.settings import load_settings

    before = load_settings()
    edit_yaml(config_copy, "training", ("leakage", "max_single_feature_auc"), 0.9)
    after = load_settings()
    leakage = _key("training_dataset", "no_leakage")
    assert judged_version(before, leakage) != judged_version(after, leakage)
    for key in (_key("model_evaluation", "quality_gate"), _key("online_features", "freshness")):
        assert judged_version(before, key) == judged_version(after, key), key
