"""Gates that hold across runs, for every entry point.

Dagster's blocking checks skip downstream steps only within the run that
evaluated them; a later run that selects just the child would happily consume
data a gate rejected (dagster issue #17332). `gated_asset` closes that hole: an
asset built with it first judges, for every blocking check on each of its
upstream assets, whether the latest evaluation still holds for what exists now
(`lib.verdicts.judge`: the same materializations, configuration, moment and
published value). Anything else refuses the run with an error that names the
gate, its asset and why.

Automation applies the same rule (`GateVerdictHolds`, evaluated on the user code
server by `gated_automation_sensor`), and so does the `make run` planner.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import dagster as dg

from e2i_platform.lib import step_cost
from e2i_platform.lib.graph import blocking_checks, check_reads, location_graph, publishes
from e2i_platform.lib.instance_guard import refuse_throwaway_instance
from e2i_platform.lib.pools import pool_for
from e2i_platform.lib.signatures import with_context_and_config
from e2i_platform.lib.transient import retry_transient
from e2i_platform.lib.verdicts import (
    UNMANAGED,
    Expected,
    GateVerdict,
    judge,
    latest_evaluations,
    latest_materializations,
)
from e2i_platform.resources.config import ConfigResource


class GateClosed(dg.Failure):
    """An upstream gate has not passed for the data this asset would read."""


def expected_now(settings, graph) -> Expected:
    """What verdicts must match now, for a code location's graph and configuration."""
    from e2i_platform.lib.versions import judged_version
    from e2i_platform.resources.publication import Publications

    pubs = Publications.for_settings(settings)
    return Expected(
        config_version=lambda key: judged_version(settings, key),
        reads=lambda key: check_reads(graph, key),
        published=lambda asset: (
            pubs.published_run(asset.to_user_string()) if publishes(graph, asset) else UNMANAGED
        ),
    )


def verdicts_for(
    instance: dg.DagsterInstance, graph, settings, check_keys: Iterable[dg.AssetCheckKey]
) -> list[GateVerdict]:
    """Verdicts of `check_keys`, the latest materializations they need read in one query."""
    check_keys = list(check_keys)
    assets = {k.asset_key for k in check_keys}
    assets |= {a for k in check_keys for a in check_reads(graph, k)}
    latest = latest_materializations(instance, assets)
    evaluations = latest_evaluations(instance, check_keys)
    expected = expected_now(settings, graph)
    return [judge(instance, key, expected, latest, evaluations) for key in check_keys]


# Verdicts judged per step, so the first input a step loads and its body share them.
_JUDGED: dict[tuple[str, str], list[GateVerdict] | GateClosed] = {}


def guard_step(step, settings) -> list[GateVerdict]:
    """Judge every blocking check on every upstream asset of the asset a step computes;
    raise `GateClosed` naming each closed gate. Called before the step reads any input
    (by the IO manager) and again by the body (for assets that load nothing)."""
    memo = (step.run_id, step.step.key)
    if len(_JUDGED) > 1000:  # refused steps never reach their body: keep this bounded
        _JUDGED.clear()
    if memo in _JUDGED:
        known = _JUDGED[memo]
        if isinstance(known, GateClosed):
            raise known
        return known
    (asset,) = step.assets_def.keys
    refuse_throwaway_instance(step.instance, asset.to_user_string())
    graph = location_graph(step.job_def)
    upstream = step.assets_def.asset_deps[asset]
    verdicts = verdicts_for(step.instance, graph, settings, blocking_checks(graph, upstream))
    closed = [v for v in verdicts if not v.passed]
    if closed:
        lines = [f"gate {v.label}: {v.reason}" for v in closed]
        _JUDGED[memo] = GateClosed(
            description=(
                f"{asset.to_user_string()} refused to run: an upstream gate has not "
                "passed for the current data.\n  "
                + "\n  ".join(lines)
                + "\nFix the data (or rerun the gate) and materialize again."
            ),
            metadata={"closed_gates": dg.MetadataValue.json([v.label for v in closed])},
        )
        raise _JUDGED[memo]
    _JUDGED[memo] = verdicts
    return verdicts


def require_upstream_gates(context: dg.AssetExecutionContext, settings) -> list[GateVerdict]:
    step = context.op_execution_context.get_step_execution_context()
    try:
        return guard_step(step, settings)
    finally:
        _JUDGED.pop((step.run_id, step.step.key), None)  # the body is the step's last use


class GateVerdictHolds(dg.AutomationCondition[dg.AssetCheckKey]):
    """True for a blocking check whose latest verdict holds now (`lib.verdicts.judge`):
    the guard's rule, so automation never requests what the guard would refuse and
    never stalls on a WARN the guard lets through."""

    @property
    def name(self) -> str:
        return "gate_verdict_holds"

    def evaluate(self, context):
        from e2i_platform.settings import load_settings

        (verdict,) = verdicts_for(
            context.asset_graph_view.instance, context.asset_graph, load_settings(), [context.key]
        )
        subset = context.candidate_subset if verdict.passed else context.get_empty_subset()
        return dg.AutomationResult(context=context, true_subset=subset)


class GatedEager(dg.AutomationCondition[dg.AssetKey]):
    """The gated condition, marked as Python of ours. Dagster's check operators
    (`all_checks_match`) do not list their operand among their children, so a tree with
    `GateVerdictHolds` under one passes for serializable, and serializing the code
    location for a code server then fails (dagster 1.13.27). Not being serializable
    itself, this node makes Dagster send the condition's snapshot instead."""

    def __init__(self, operand: dg.AutomationCondition[dg.AssetKey]):
        self.operand = operand

    @property
    def name(self) -> str:
        return "gated_eager"

    @property
    def children(self):
        return [self.operand]

    async def evaluate(self, context):
        result = await context.for_child_condition(
            child_condition=self.operand,
            child_indices=[0],
            candidate_subset=context.candidate_subset,
        ).evaluate_async()
        return dg.AutomationResult(context, result.true_subset, child_results=[result])


def gated_automation() -> dg.AutomationCondition:
    """eager(), but only while every upstream blocking gate's verdict holds (or the gate
    is evaluated in the same tick: the run then blocks in-run)."""
    gates_hold = dg.AutomationCondition.all_deps_match(
        dg.AutomationCondition.all_checks_match(
            GateVerdictHolds() | dg.AutomationCondition.will_be_requested(), blocking_only=True
        ).with_label("all_blocking_verdicts_hold")
    ).with_label("all_deps_gate_verdicts_hold")
    return GatedEager(dg.AutomationCondition.eager() & gates_hold)


def gated_automation_sensor() -> dg.AutomationConditionSensorDefinition:
    # The gates' condition is Python of ours: it must run where the code is.
    return dg.AutomationConditionSensorDefinition(
        "gated_automation_sensor",
        target=dg.AssetSelection.all(),
        use_user_code_server=True,
        # Off until turned on: the main job and schedules already materialize the graph,
        # and automation on top would write the same assets at the same moment.
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="Declarative automation of every asset, with the gates' verdict rule.",
    )


def gated_asset(**asset_kwargs: Any) -> Callable[[Callable[..., Any]], dg.AssetsDefinition]:
    """`@dg.asset` whose body runs only when every upstream blocking gate's verdict holds.

    The verdicts are added to the asset's metadata, so a materialization shows which
    gate results it relied on, and so is what the step cost (`lib.step_cost`). The
    configuration resource is added when the asset does not ask for it: the verdicts
    are judged against the configuration in force. An asset that writes a shared store
    gets that store's pool (`lib.pools`): one writer at a time across runs.
    """
    asset_kwargs.setdefault("automation_condition", gated_automation())

    def decorate(fn: Callable[..., Any]) -> dg.AssetsDefinition:
        if pool := pool_for(asset_kwargs.get("name") or fn.__name__):
            asset_kwargs.setdefault("pool", pool)
        flags: dict[str, bool] = {}

        def guarded(context: dg.AssetExecutionContext, e2i_config: ConfigResource, **kwargs):
            step_cost.start_step(context)
            settings = e2i_config.settings()  # reads and validates config/: once per step
            verdicts = require_upstream_gates(context, settings)
            context.add_output_metadata(
                {"upstream_gates": dg.MetadataValue.json({v.label: v.reason for v in verdicts})}
            )
            if flags["config"]:
                kwargs["e2i_config"] = e2i_config
            retries = settings.platform.retries
            with retry_transient(context, retries.max_retries, retries.first_wait_seconds):
                result = fn(context, **kwargs) if flags["context"] else fn(**kwargs)
            if isinstance(result, dg.MaterializeResult):  # no IO manager will write it
                context.add_output_metadata(step_cost.finish_step(context))
            return result

        flags["context"], flags["config"] = with_context_and_config(
            guarded, fn, dg.AssetExecutionContext
        )
        return dg.asset(**asset_kwargs)(guarded)

    return decorate
