"""Which assets a `make run` must materialize, and which it can reuse as they are.

An asset is up to date when its latest materialization
- carries the current code version (package code and resolved configuration,
  `lib.versions.platform_version`),
- for a raw table: has the data version its source would produce now (the
  landing file's hash or the generator spec's, `SourceResource.source_version`),
- for anything else: consumed the data versions its upstream assets have now,
  and none of those upstream assets is about to run again,
- has every blocking gate of its own holding now, by the guard's rule
  (`lib.verdicts`: the same materializations of everything the gate read, the same
  configuration, not expired, the judged value published); a gate that does not
  hold is re-run (the cause may have been transient, such as a store that was
  down, or a moment that passed);
- and still has its stored value: the published file with its recorded sha256, the
  model file, the release manifest (`ops.stored`).

Everything else runs, with the reason. The decision reads the instance's event
log, the sources' fingerprints and the stored values' hashes, so an unchanged
re-run costs a few queries and file reads instead of the whole graph.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import dagster as dg

from e2i_platform.contract import INPUT_TABLES, raw_asset_name
from e2i_platform.ingest.sources import source_change
from e2i_platform.lib.gates import expected_now
from e2i_platform.lib.graph import blocking_checks, check_reads
from e2i_platform.lib.verdicts import judge, latest_evaluations, latest_materializations
from e2i_platform.lib.versions import CODE_VERSION_TAG, DATA_VERSION_TAG, INPUT_VERSION_PREFIX
from e2i_platform.ops.stored import stored_value_problem

# How long a reused time-based verdict must still hold: about a cold run's length.
EXPIRY_MARGIN_S = 600


@dataclass(frozen=True)
class Decision:
    asset: str
    run: bool
    reason: str  # why it runs; or, when reused, which materialization is kept
    data_version: str | None = None  # of the reused materialization
    run_id: str | None = None


def plan_order(graph, keys) -> list[dg.AssetKey]:
    """Upstream first, where a check's reads count as upstream of the checked asset (a
    gate that reads `hcp_profiles` is judged again when `hcp_profiles` runs)."""
    keys = set(keys)
    parents = {
        k: (
            set(graph.get(k).parent_keys)
            | {r for c in blocking_checks(graph, [k]) for r in check_reads(graph, c)}
        )
        & keys
        for k in keys
    }
    order: list[dg.AssetKey] = []
    done: set[dg.AssetKey] = set()
    while len(order) < len(keys):
        ready = sorted((k for k in keys - done if parents[k] <= done), key=str)
        if not ready:
            raise ValueError(f"cycle among {sorted(map(str, keys - done))}")
        order += ready
        done |= set(ready)
    return order


def plan_run(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    source,
    settings,
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
    records = latest_materializations(instance, materializable)  # one query
    evaluations = latest_evaluations(instance, blocking_checks(graph, materializable))  # one
    plan = _Plan(
        graph, instance, source, settings, raw_tables, decisions, versions, records, evaluations
    )
    for key in plan_order(graph, materializable):
        event = records[key].event_log_entry if records[key] else None
        tags = (event.asset_materialization.tags or {}) if event else {}
        versions[key] = tags.get(DATA_VERSION_TAG)
        name = key.to_user_string()
        reason = forced.get(name) or plan.why_run(key, tags, event)
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


@dataclass
class _Plan:
    graph: object
    instance: dg.DagsterInstance
    source: object
    settings: object
    raw_tables: dict
    decisions: dict
    versions: dict
    records: dict
    evaluations: dict

    def __post_init__(self):
        # A verdict that expires while the run is still going would be refused downstream:
        # judged as of a while from now, it is re-evaluated instead of reused.
        expected = expected_now(self.settings, self.graph)
        self.expected = replace(expected, now=expected.now + EXPIRY_MARGIN_S)

    def why_run(self, key, tags, event) -> str | None:
        graph, decisions, versions = self.graph, self.decisions, self.versions
        name = key.to_user_string()
        node = graph.get(key)
        if event is None:
            return "never materialized"
        if tags.get(CODE_VERSION_TAG) != node.code_version:
            return "code or configuration changed since its last materialization"
        if name in self.raw_tables:
            table = self.raw_tables[name]
            if tags.get(DATA_VERSION_TAG) != self.source.source_version(table):
                recorded = event.asset_materialization.metadata.get("source")
                return source_change(
                    recorded.value if recorded else None, self.source.describe(table)
                )
        for parent in sorted(node.parent_keys, key=lambda k: k.to_user_string()):
            if parent not in decisions:
                continue  # not an asset this job materializes
            if decisions[parent].run:
                return f"upstream {parent.to_user_string()} runs"
            consumed = tags.get(INPUT_VERSION_PREFIX + parent.to_user_string())
            if consumed != versions[parent]:
                return (
                    f"upstream {parent.to_user_string()} was materialized again since "
                    f"(it read data version {(consumed or 'none')[:12]}, now "
                    f"{(versions[parent] or 'none')[:12]})"
                )
        closed = []
        for check_key in blocking_checks(graph, [key]):
            for read in sorted(check_reads(graph, check_key), key=str):
                if read in decisions and decisions[read].run:
                    return f"gate {check_key.name} reads {read.to_user_string()}, which runs"
            verdict = judge(self.instance, check_key, self.expected, self.records, self.evaluations)
            if not verdict.passed:
                closed.append(verdict)
        if closed:
            # A gate closed only because another one has not passed: name the other one.
            first = min(closed, key=lambda v: v.unpublished)
            return f"gate {first.check.name}: {first.reason}"
        if problem := stored_value_problem(graph, key, event.run_id, self.settings):
            return f"stored value: {problem}"
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
