"""Which assets a `make run` must materialize, and which it can reuse as they are.

An asset is up to date when its latest materialization
- carries the current code version (package code and resolved configuration,
  `lib.versions.platform_version`),
- for a raw table: has the data version its source would produce now (the
  landing file's hash or the generator spec's, `SourceResource.source_version`),
- for anything else: consumed the data versions its upstream assets have now,
  and none of those upstream assets is about to run again,
- and passed every blocking check of its own on that materialization (a failed
  or missing gate is re-run: the cause may have been transient, such as a store
  that was down).

Everything else runs, with the reason. The decision reads only the instance's
event log and the sources' fingerprints, so an unchanged re-run costs a few
queries instead of the whole graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from e2i_platform.contract import INPUT_TABLES, raw_asset_name
from e2i_platform.lib.gates import gate_verdict
from e2i_platform.lib.versions import CODE_VERSION_TAG, DATA_VERSION_TAG, INPUT_VERSION_PREFIX


@dataclass(frozen=True)
class Decision:
    asset: str
    run: bool
    reason: str  # why it runs; or, when reused, which materialization is kept
    data_version: str | None = None  # of the reused materialization
    run_id: str | None = None


def plan_run(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    source,
    forced: dict[str, str] | None = None,
) -> list[Decision]:
    """A decision for every asset of `defs`, upstream first; `forced` names assets
    that run whatever their state, with the reason."""
    forced = forced or {}
    graph = defs.resolve_asset_graph()
    raw_tables = {raw_asset_name(t): t for t in INPUT_TABLES}
    decisions: dict[dg.AssetKey, Decision] = {}
    versions: dict[dg.AssetKey, str | None] = {}
    materializable = [k for k in graph.get_all_asset_keys() if graph.get(k).is_materializable]
    latest = instance.get_latest_materialization_events(materializable)  # one query
    for level in graph.toposorted_asset_keys_by_level:
        for key in sorted(level, key=lambda k: k.to_user_string()):
            node = graph.get(key)
            if not node.is_materializable:
                continue
            event = latest.get(key)
            tags = (event.asset_materialization.tags or {}) if event else {}
            versions[key] = tags.get(DATA_VERSION_TAG)
            reason = forced.get(key.to_user_string()) or _why_run(
                key, node, tags, event, graph, instance, source, raw_tables, decisions, versions
            )
            name = key.to_user_string()
            decisions[key] = (
                Decision(name, True, reason)
                if reason
                else Decision(
                    name,
                    False,
                    f"up to date: data version {(versions[key] or '?')[:16]} "
                    f"from run {event.run_id[:8]}",
                    versions[key],
                    event.run_id,
                )
            )
    return list(decisions.values())


def run_mode_forces(run_mode: str) -> dict[str, str]:
    """Assets a training run mode other than reuse_if_exists must run: reusing them
    would silently ignore the mode."""
    if run_mode == "force_new":
        return {a: "run_mode force_new" for a in ("hpo_study", "trained_model")}
    if run_mode != "reuse_if_exists":
        return {"trained_model": f"run_mode {run_mode}"}
    return {}


def _why_run(key, node, tags, event, graph, instance, source, raw_tables, decisions, versions):
    name = key.to_user_string()
    if event is None:
        return "never materialized"
    if tags.get(CODE_VERSION_TAG) != node.code_version:
        return "code or configuration changed since its last materialization"
    if name in raw_tables:
        now = source.source_version(raw_tables[name])
        if tags.get(DATA_VERSION_TAG) != now:
            return f"source changed: {tags.get(DATA_VERSION_TAG)} -> {now}"
    for parent in sorted(node.parent_keys, key=lambda k: k.to_user_string()):
        if parent not in decisions:
            continue  # not an asset this job materializes
        if decisions[parent].run:
            return f"upstream {parent.to_user_string()} runs"
        consumed = tags.get(INPUT_VERSION_PREFIX + parent.to_user_string())
        if consumed != versions[parent]:
            return (
                f"upstream {parent.to_user_string()} changed since "
                f"({consumed} -> {versions[parent]})"
            )
    for check_key in sorted(graph.get_check_keys_for_assets({key}), key=str):
        if graph.get_check_spec(check_key).blocking:
            verdict = gate_verdict(instance, check_key)
            if not verdict.passed:
                return f"gate {check_key.name}: {verdict.reason}"
    return None


def report_reuse(instance: dg.DagsterInstance, decisions: list[Decision], why: str) -> None:
    """Record each reused asset as an observation, so the UI's event log shows the reuse
    next to the materializations (an observation without a data version leaves the
    asset's version and staleness alone)."""
    for d in decisions:
        if d.run:
            continue
        instance.report_runless_asset_event(
            dg.AssetObservation(
                asset_key=dg.AssetKey.from_user_string(d.asset),
                description=f"reused by {why}",
                metadata={
                    "reused": True,
                    "reused_by": why,
                    "data_version": d.data_version or "",
                    "materialized_in_run": d.run_id or "",
                },
            )
        )
