"""Preflight: every writer of a shared store has its pool (lib.pools) in the loaded
definitions, and every instance the platform creates limits each pool to one slot and
monitors runs with the watched launcher."""

from pathlib import Path

import dagster as dg
import pytest
import yaml

from e2i_platform.lib.pool_claims import SerializedClaimsSqliteEventLogStorage
from e2i_platform.lib.pools import LIMIT, POOLS
from e2i_platform.ops.instance import TEMPLATES, prepare_instance
from e2i_platform.ops.run_monitoring import WatchedRunLauncher
from e2i_platform.settings import load_settings

REPO = Path(__file__).resolve().parents[2]


def _node_pools(defs: dg.Definitions) -> dict[str, str | None]:
    """Every asset's op and every op of the code location's jobs, with its pool."""
    pools = {}
    for key in defs.resolve_asset_graph().get_all_asset_keys():
        node = defs.resolve_assets_def(key).node_def
        if isinstance(node, dg.GraphDefinition):  # a graph-backed asset: each of its ops
            for op in node.iterate_op_defs():
                pools[op.name] = op.pool
        else:
            pools[key.to_user_string()] = node.pool
    for job in defs.resolve_all_job_defs():
        for node in job.graph.node_dict.values():
            if not job.asset_layer.has(node.name):  # an op of its own, not an asset's
                definition = node.definition
                ops = (
                    definition.iterate_op_defs()
                    if isinstance(definition, dg.GraphDefinition)
                    else [definition]
                )
                for op in ops:
                    pools.setdefault(op.name, op.pool)
    return pools


def test_every_writer_has_its_pool_and_nothing_else_has_one(e2i_home):
    from e2i_platform.definitions import defs

    pools = _node_pools(defs())
    assert {name: pools.get(name) for name in POOLS} == POOLS
    with_pool = {name for name, pool in pools.items() if pool is not None}
    assert with_pool == set(POOLS), "a pool outside lib.pools.POOLS"


@pytest.mark.parametrize("template", sorted(TEMPLATES.values()))
def test_each_instance_template_limits_pools_and_monitors_runs(template, tmp_path, monkeypatch):
    from dagster._core.instance.config import dagster_instance_config

    # The prod template reads its storage URL from the environment; only the schema is
    # checked here (no connection is made).
    monkeypatch.setenv("DAGSTER_PG_URL", "postgresql+psycopg2://nobody@127.0.0.1:1/none")
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO / "config" / "dagster" / template).read_text())
    config, _ = dagster_instance_config(str(home))  # Dagster's own validation
    assert config["concurrency"]["pools"] == {"granularity": "op", "default_limit": LIMIT}
    assert config["run_launcher"] == {
        "module": "e2i_platform.ops.run_monitoring",
        "class": WatchedRunLauncher.__name__,
    }
    monitoring = config["run_monitoring"]
    assert monitoring["enabled"] is True
    assert monitoring["max_resume_run_attempts"] == 0  # the launcher cannot resume
    assert 0 < monitoring["free_slots_after_run_end_seconds"] <= 60
    raw = yaml.safe_load((REPO / "config" / "dagster" / template).read_text())
    assert "config" not in raw["run_coordinator"], "run limits belong in concurrency.runs"


def test_the_instance_make_run_creates_enforces_it(e2i_home):
    """What `make run` / `make dev` render (ops.instance), loaded as Dagster loads it."""
    from dagster._core.instance.config import PoolGranularity

    home = prepare_instance(load_settings())
    with dg.DagsterInstance.from_config(str(home)) as instance:
        pools = instance.get_concurrency_config().pool_config
        assert pools.default_pool_limit == LIMIT
        assert pools.pool_granularity == PoolGranularity.OP
        assert instance.event_log_storage.supports_global_concurrency_limits
        # Dagster's own SQLite event log, where its default storage keeps it (a home
        # from before keeps its history), with claims serialized (lib.pool_claims).
        storage = instance.event_log_storage
        assert isinstance(storage, SerializedClaimsSqliteEventLogStorage)
        assert Path(storage._base_dir) == (home / "history" / "runs").resolve()
        assert instance.run_monitoring_enabled
        assert isinstance(instance.run_launcher, WatchedRunLauncher)
        assert instance.run_launcher.supports_check_run_worker_health
        assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 2


def test_a_home_path_yaml_would_misread_is_rendered_as_one_value(tmp_path, monkeypatch):
    """'#' starts a YAML comment and ': ' a mapping: the rendered path must survive both."""
    odd = tmp_path / "run #2: copy" / "dagster"
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    home = prepare_instance(load_settings(), odd)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert Path(instance.event_log_storage._base_dir) == (odd / "history" / "runs").resolve()


def test_a_dagster_yaml_copied_with_its_home_is_refused_until_rendered_again(
    e2i_home, tmp_path, monkeypatch
):
    """A home copied elsewhere carries a dagster.yaml naming the original's event log:
    opened as DAGSTER_HOME (as the Dagster CLIs open it) it is refused, naming both and
    the command that renders it; rendered for the copy, it opens the copy's own log."""
    import shutil

    original = prepare_instance(load_settings())
    copy = tmp_path / "restored" / "dagster"
    shutil.copytree(original, copy)
    monkeypatch.setenv("DAGSTER_HOME", str(copy))
    with pytest.raises(RuntimeError, match="not under DAGSTER_HOME") as refused:
        dg.DagsterInstance.get()
    assert str(original) in str(refused.value) and "e2i_platform.ops.instance" in str(refused.value)
    prepare_instance(load_settings(), copy)
    with dg.DagsterInstance.get() as instance:
        assert Path(instance.event_log_storage._base_dir) == (copy / "history" / "runs").resolve()
