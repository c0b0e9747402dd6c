"""`gated_asset` and its guard in real Dagster runs on a two-asset graph: a gated
consumer runs on an upstream gate that passed or warned, is refused with every closed
gate named when one failed, and automation asks for it only while the gates hold."""

import dagster as dg
import pandas as pd
import pytest

from e2i_platform.lib import gates
from e2i_platform.lib.gate_checks import gate_check
from e2i_platform.lib.gate_results import gate_result
from e2i_platform.lib.gates import GateClosed, gated_asset
from e2i_platform.resources import ConfigResource, WarehouseIOManager


class Batch(dg.Config):
    bad_rows: int = 0
    blocking: bool = True  # whether a failure of the `schema` gate is ERROR or WARN


@dg.asset(io_manager_key="warehouse")
def source_table(config: Batch) -> pd.DataFrame:
    return pd.DataFrame(
        {"bad": [True] * config.bad_rows + [False] * 3, "blocking": config.blocking}
    )


# Real gate names: the configuration each applies is known (lib.versions.judged_config).
@gate_check(asset="source_table", name="schema")
def schema(source_table: pd.DataFrame) -> dg.AssetCheckResult:
    bad = int(source_table["bad"].sum())
    return gate_result(
        passed=bad == 0,
        blocking_failure=bool(source_table["blocking"].iloc[0]),
        summary=f"{bad} bad rows",
        rows_checked=len(source_table),
        failing_rows=bad,
    )


@gate_check(asset="source_table", name="references_resolve")
def references(source_table: pd.DataFrame) -> dg.AssetCheckResult:
    return gate_result(
        passed=True, blocking_failure=True, summary="resolved", rows_checked=len(source_table)
    )


@gated_asset(ins={"source_table": dg.AssetIn()})
def loads_it(context, source_table: pd.DataFrame) -> int:
    """Reads the published value through the warehouse (the guard runs on input load)."""
    return len(source_table)


@gated_asset(deps=["source_table"])
def reads_nothing() -> dg.MaterializeResult:
    """No context, no inputs, no IO manager: the body's guard is the only one."""
    return dg.MaterializeResult(metadata={"own": 1})


@gated_asset(deps=["source_table"], automation_condition=None)
def wants_config(e2i_config: ConfigResource) -> str:
    return e2i_config.env


@dg.asset_check(asset=source_table, blocking=False)
def advisory() -> dg.AssetCheckResult:
    """Not blocking: automation never waits on it (it is never even evaluated here)."""
    return dg.AssetCheckResult(passed=False)


CONSUMERS = ("loads_it", "reads_nothing", "wants_config")


@pytest.fixture(scope="module")
def instance():
    """One instance for these tests (each begins by materializing source_table anew)."""
    with dg.instance_for_test() as shared:
        yield shared


@pytest.fixture
def resources(settings, tmp_path):
    config = ConfigResource(config_dir=str(settings.config_dir), env=settings.env)
    return {
        "e2i_config": config,
        "warehouse": WarehouseIOManager(home=str(settings.home), e2i_config=config),
        "io_manager": dg.FilesystemIOManager(base_dir=str(tmp_path / "io")),
    }


def _run(instance, resources, selection, bad_rows=None, blocking=True):
    """Materialize `selection`; with `bad_rows`, a new source_table (and its checks)."""
    if bad_rows is not None:
        selection = dg.AssetSelection.assets("source_table") | dg.AssetSelection.assets(*selection)
    config = {"bad_rows": bad_rows or 0, "blocking": blocking}
    return dg.materialize(
        [source_table, schema, references, loads_it, reads_nothing, wants_config],
        instance=instance,
        resources=resources,
        selection=selection,
        run_config={"ops": {"source_table": {"config": config}}} if bad_rows is not None else None,
        raise_on_error=False,
    )


def _metadata(instance, asset: str) -> dict:
    event = instance.get_latest_materialization_event(dg.AssetKey(asset))
    return event.asset_materialization.metadata


def _refusals(result) -> dict[str, dg.Failure]:
    return {
        e.step_key: e.step_failure_data.user_failure_data
        for e in result.all_events
        if e.is_step_failure
    }


def test_consumers_run_on_passed_gates_and_record_the_verdicts(instance, resources):
    first = _run(instance, resources, [], bad_rows=0)
    assert first.success
    result = _run(instance, resources, list(CONSUMERS))
    assert result.success, _refusals(result)
    verdicts = {
        "references_resolve on source_table": f"passed in run {first.run_id}",
        "schema on source_table": f"passed in run {first.run_id}",
    }
    for asset in CONSUMERS:
        assert _metadata(instance, asset)["upstream_gates"].data == verdicts, asset
    assert result.output_for_node("loads_it") == 3
    assert result.output_for_node("wants_config") == "local"
    # The body of an asset no IO manager writes reports the step's cost itself.
    cost = _metadata(instance, "reads_nothing")
    assert cost["own"].value == 1 and cost["step_seconds"].value >= 0
    assert "step_peak_rss_mib" in cost
    assert "step_seconds" not in _metadata(instance, "wants_config")  # the IO manager's job

    # The verdict memo: a step's entry is dropped by its body; at most 1000 are kept.
    gates._JUDGED.clear()
    stale = {("old-run", f"step_{i}"): [] for i in range(1000)}
    gates._JUDGED.update(stale)
    assert _run(instance, resources, ["reads_nothing", "wants_config"]).success
    assert stale == gates._JUDGED
    gates._JUDGED[("old-run", "one_more")] = []
    assert _run(instance, resources, ["reads_nothing"]).success
    assert gates._JUDGED == {}


def test_a_failed_gate_refuses_every_consumer_naming_it(instance, resources):
    failed = _run(instance, resources, [], bad_rows=2)
    assert not failed.success  # schema ERROR: the source's blocking check failed
    gates._JUDGED.clear()
    result = _run(instance, resources, ["loads_it", "reads_nothing"])
    refusals = _refusals(result)
    assert set(refusals) == {"loads_it", "reads_nothing"}
    for asset in refusals:
        refusal = refusals[asset]
        assert refusal.description == (
            f"{asset} refused to run: an upstream gate has not passed for the current data.\n"
            # Passed, but on a value never published: its sibling gate rejected it.
            f"  gate references_resolve on source_table: the value it judged (run "
            f"{failed.run_id}) is not the published one (nothing)\n"
            f"  gate schema on source_table: its latest result is FAILED (ERROR) in run "
            f"{failed.run_id}: 2 bad rows\n"
            "Fix the data (or rerun the gate) and materialize again."
        )
        assert refusal.metadata["closed_gates"].data == [
            "references_resolve on source_table",
            "schema on source_table",
        ]
    assert not result.get_asset_materialization_events()
    # Refused on loading its input, loads_it never reached its body: its entry stays.
    (key,) = gates._JUDGED
    assert key == (result.run_id, "loads_it") and isinstance(gates._JUDGED[key], GateClosed)
    gates._JUDGED.clear()


def test_automation_follows_the_verdicts_and_a_warning_does_not_block(instance, resources):
    defs = dg.Definitions(
        assets=[source_table, loads_it, reads_nothing],
        asset_checks=[schema, references, advisory],
        resources=resources,
    )
    tick = dg.evaluate_automation_conditions(defs=defs, instance=instance)  # starts tracking
    warned = _run(instance, resources, [], bad_rows=1, blocking=False)
    (evaluation,) = [e for e in warned.get_asset_check_evaluations() if e.check_name == "schema"]
    assert evaluation.passed is False and evaluation.severity == dg.AssetCheckSeverity.WARN
    tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=tick.cursor)
    assert tick.get_num_requested(reads_nothing.key) == 1
    assert tick.get_num_requested(loads_it.key) == 1
    result = _run(instance, resources, ["reads_nothing"])
    assert result.success, _refusals(result)
    seen = _metadata(instance, "reads_nothing")["upstream_gates"].data
    assert seen["schema on source_table"] == f"warned (not blocking) in run {warned.run_id}"

    assert not _run(instance, resources, [], bad_rows=4).success
    tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=tick.cursor)
    assert tick.get_num_requested(reads_nothing.key) == 0
    assert tick.get_num_requested(loads_it.key) == 0


def test_the_automation_condition_and_sensor():
    assert wants_config.automation_conditions_by_key.get(wants_config.key) is None  # as given
    condition = reads_nothing.automation_conditions_by_key[reads_nothing.key]
    assert condition.name == "gated_eager"
    labels = set()
    stack = [condition]
    while stack:
        node = stack.pop()
        labels.add(node.get_label() if hasattr(node, "get_label") else node.label)
        stack.extend(node.children)
    assert {"all_deps_gate_verdicts_hold", "all_blocking_verdicts_hold"} <= labels
    assert gates.GateVerdictHolds().name == "gate_verdict_holds"
    sensor = gates.gated_automation_sensor()
    assert sensor.name == "gated_automation_sensor"
    assert sensor._use_user_code_server is True
    assert sensor.asset_selection == dg.AssetSelection.all()
    assert sensor.description == (
        "Declarative automation of every asset, with the gates' verdict rule."
    )
