"""Gates that hold across runs.

Dagster's blocking checks skip downstream steps only within the run that
evaluated them; a later run that selects just the child would happily consume
data a gate rejected (dagster issue #17332). `gated_asset` closes that hole: an
asset built with it first asks the instance, for every blocking check on each
of its upstream assets, for the latest evaluation and compares it with that
upstream's latest materialization. Anything but a pass of the current data —
a failure, a check that never ran, one that ran on older data or did not finish
— refuses the run with an error that names the gate, its asset and its result.

The same assets get `eager() & all_deps_blocking_checks_passed()` so automation
respects the gates too. UI runs, CLI runs, schedules and sensors all execute the
asset body, so the guard covers every entry point.
"""

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dagster as dg


@dataclass(frozen=True)
class GateVerdict:
    check: dg.AssetCheckKey
    passed: bool
    reason: str

    @property
    def label(self) -> str:
        return f"{self.check.name} on {self.check.asset_key.to_user_string()}"


class GateClosed(dg.Failure):
    """An upstream gate has not passed for the data this asset would read."""


# Statuses of a check execution that produced an evaluation (planned / in-progress /
# skipped runs did not).
_COMPLETED = ("SUCCEEDED", "FAILED")


def gated_automation() -> dg.AutomationCondition:
    return dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed()


def gate_verdict(instance: dg.DagsterInstance, check_key: dg.AssetCheckKey) -> GateVerdict:
    upstream = check_key.asset_key
    latest = instance.fetch_materializations(upstream, limit=1).records
    if not latest:
        return GateVerdict(check_key, False, "its asset has never been materialized")
    materialization = latest[0]
    record = instance.get_latest_asset_check_evaluation_record(check_key)
    if record is None:
        return GateVerdict(check_key, False, "it has never been evaluated")
    if record.status.value not in _COMPLETED:
        return GateVerdict(
            check_key,
            False,
            f"its latest evaluation (run {record.run_id}) did not complete "
            f"(status {record.status.value})",
        )
    evaluation = record.evaluation
    target = evaluation.target_materialization_data if evaluation else None
    if target is None or target.storage_id != materialization.storage_id:
        evaluated = f"run {target.run_id}" if target else "no materialization"
        return GateVerdict(
            check_key,
            False,
            f"it has not evaluated the latest materialization (run {materialization.run_id}); "
            f"its latest evaluation was for {evaluated}",
        )
    if evaluation.passed:
        return GateVerdict(check_key, True, f"passed in run {record.run_id}")
    if evaluation.severity == dg.AssetCheckSeverity.WARN:
        # WARN informs and never blocks, in the run or across runs.
        return GateVerdict(check_key, True, f"warned (not blocking) in run {record.run_id}")
    summary = evaluation.description or "failed"
    return GateVerdict(
        check_key, False, f"its latest result is FAILED (ERROR) in run {record.run_id}: {summary}"
    )


def code_location_graph(context: dg.AssetExecutionContext):
    """The asset graph of the whole code location, also from a job built on a selection
    (whose own graph holds only the selected checks)."""
    graph = context.job_def.asset_layer.asset_graph
    return getattr(graph, "source_asset_graph", graph)


def upstream_gate_verdicts(context: dg.AssetExecutionContext) -> list[GateVerdict]:
    """Verdicts of every blocking check on every upstream asset of this asset."""
    graph = code_location_graph(context)
    upstream = context.assets_def.asset_deps[context.asset_key]
    verdicts = []
    for check_key in sorted(graph.get_check_keys_for_assets(upstream), key=str):
        if graph.get_check_spec(check_key).blocking:
            verdicts.append(gate_verdict(context.instance, check_key))
    return verdicts


def require_upstream_gates(context: dg.AssetExecutionContext) -> list[GateVerdict]:
    verdicts = upstream_gate_verdicts(context)
    closed = [v for v in verdicts if not v.passed]
    if closed:
        lines = [f"gate {v.label}: {v.reason}" for v in closed]
        raise GateClosed(
            description=(
                f"{context.asset_key.to_user_string()} refused to run: an upstream gate has not "
                "passed for the current data.\n  "
                + "\n  ".join(lines)
                + "\nFix the data (or rerun the gate) and materialize again."
            ),
            metadata={"closed_gates": dg.MetadataValue.json([v.label for v in closed])},
        )
    return verdicts


def gated_asset(**asset_kwargs: Any) -> Callable[[Callable[..., Any]], dg.AssetsDefinition]:
    """`@dg.asset` whose body runs only when every upstream blocking gate passed.

    The gate verdicts are added to the asset's metadata, so a materialization shows
    which gate results it relied on.
    """
    asset_kwargs.setdefault("automation_condition", gated_automation())

    def decorate(fn: Callable[..., Any]) -> dg.AssetsDefinition:
        signature = inspect.signature(fn)
        params = list(signature.parameters.values())
        takes_context = bool(params) and params[0].name == "context"

        def guarded(context: dg.AssetExecutionContext, **kwargs: Any) -> Any:
            verdicts = require_upstream_gates(context)
            context.add_output_metadata(
                {"upstream_gates": dg.MetadataValue.json({v.label: v.reason for v in verdicts})}
            )
            return fn(context, **kwargs) if takes_context else fn(**kwargs)

        functools.update_wrapper(guarded, fn)
        # Dagster reads the parameters (inputs, resources, config) from the signature: show
        # the asset's own, with the context the guard needs in front.
        if not takes_context:
            context_param = inspect.Parameter(
                "context",
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                annotation=dg.AssetExecutionContext,
            )
            signature = signature.replace(parameters=[context_param, *params])
        guarded.__signature__ = signature  # type: ignore[attr-defined]
        return dg.asset(**asset_kwargs)(guarded)

    return decorate
