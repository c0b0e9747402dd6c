"""`gate_check`: a blocking `@asset_check` whose result carries what it judged, and
which publishes the value it audited once every blocking check of the asset passed.

Every result gets the evidence `lib.verdicts` matches later: the run of every asset
the check read (`e2i/judged_inputs`), the version of the configuration it applied
(`e2i/judged_under`), when it was evaluated and, for time-based gates, when the
verdict expires (`e2i/expires_at`, from the check's `dagster/fresh_until_timestamp`
or its own `e2i/expires_at`). Then write-audit-publish: a pass (or WARN) stamps the
audited value, and the stamp that completes the asset's blocking set publishes it;
an ERROR withdraws the stamp and leaves the value staged, its path in the metadata.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from e2i_platform.lib.graph import (
    blocking_checks,
    check_reads,
    location_graph,
    publishes,
    stored_extension,
)
from e2i_platform.lib.signatures import with_context_and_config
from e2i_platform.lib.verdicts import EVALUATED_AT, EXPIRES_AT, JUDGED_INPUTS, JUDGED_UNDER
from e2i_platform.lib.versions import judged_version
from e2i_platform.resources.config import ConfigResource
from e2i_platform.resources.publication import Publications, take_loaded

FRESH_UNTIL = "dagster/fresh_until_timestamp"


def evidence(
    check_key: dg.AssetCheckKey, settings, judged_inputs: dict[str, str | None], metadata
) -> dict:
    """What a check judged: the runs it read, the configuration version it applied, when,
    and until when its verdict holds (from the result's own expiry, if any)."""
    expires = metadata.get(EXPIRES_AT, metadata.get(FRESH_UNTIL))
    return {
        "judged_inputs": dict(sorted(judged_inputs.items())),
        "judged_under": judged_version(settings, check_key),
        "evaluated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "expires_at": float(getattr(expires, "value", expires)) if expires is not None else None,
    }


def evidence_metadata(found: dict) -> dict[str, dg.MetadataValue]:
    """The evidence as check-result metadata (also for the freshness sensor's results)."""
    out = {
        JUDGED_INPUTS: dg.MetadataValue.json(found["judged_inputs"]),
        JUDGED_UNDER: dg.MetadataValue.text(found["judged_under"]),
        EVALUATED_AT: dg.MetadataValue.text(found["evaluated_at"]),
    }
    if found["expires_at"] is not None:
        out[EXPIRES_AT] = dg.MetadataValue.timestamp(found["expires_at"])
    return out


def _latest_runs(instance: dg.DagsterInstance, keys) -> dict[str, str | None]:
    from e2i_platform.lib.verdicts import latest_materializations

    found = latest_materializations(instance, keys)
    return {k.to_user_string(): (r.run_id if r else None) for k, r in found.items()}


def seal(context: dg.AssetCheckExecutionContext, result: dg.AssetCheckResult, settings):
    """Add the evidence to a check's result and publish the value it passed."""
    op_context = context.op_execution_context
    step = op_context.get_step_execution_context()
    graph = location_graph(op_context.job_def)
    (spec,) = context.check_specs
    check_key = spec.key
    asset = check_key.asset_key
    loaded, judged_bytes = take_loaded(step.run_id, step.step.key)
    # What was loaded is what was judged; an asset read any other way (the online store
    # behind online_features) is judged as its latest materialization now.
    read = {asset, *check_reads(graph, check_key)}
    unloaded = [k for k in read if k.to_user_string() not in loaded]
    judged = {**_latest_runs(context.instance, unloaded), **loaded}
    metadata = dict(result.metadata or {})
    found = evidence(check_key, settings, judged, metadata)
    metadata.update(evidence_metadata(found))
    if publishes(graph, asset):
        run_id = judged[asset.to_user_string()]
        stamp = {**found, "sha256": judged_bytes}
        if judged_bytes:
            metadata["judged_sha256"] = dg.MetadataValue.text(judged_bytes)
        metadata.update(_audit(context, graph, check_key, run_id, result, settings, stamp))
    return dg.AssetCheckResult(
        passed=result.passed,
        severity=result.severity,
        metadata=metadata,
        description=result.description,
        check_name=check_key.name,
        asset_key=asset,
    )


def _audit(context, graph, check_key, run_id: str | None, result, settings, found) -> dict:
    """Stamp (or withdraw) this check's pass of the value of `run_id`; publish it when the
    stamps of every blocking check of the asset hold now, by the verdict rule's own
    evidence test, and the value is still the asset's latest. A stamp names the sha256
    of the bytes its check read (None for a check that read no stored value): passes of
    different bytes of one run (an attempt delivered twice wrote it again) never add
    up, and only the bytes they judged are published."""
    from e2i_platform.lib.gates import expected_now
    from e2i_platform.lib.verdicts import evidence_problem, latest_materializations

    asset = check_key.asset_key
    name = asset.to_user_string()
    ext = stored_extension(graph, asset)
    pubs = Publications.for_settings(settings)
    if run_id is None:
        return {"published": dg.MetadataValue.text("nothing to publish: never materialized")}
    accepted = result.passed or result.severity == dg.AssetCheckSeverity.WARN
    with pubs.lock(name):
        stamps = pubs.set_pass(name, run_id, check_key.name, found if accepted else None)
        if not accepted:
            kept = pubs.published_run(name)
            return {
                "rejected_value": dg.MetadataValue.path(str(pubs.staged_path(name, run_id, ext))),
                "published_value_kept": dg.MetadataValue.text(
                    f"run {kept}: {pubs.published_path(name, ext)}" if kept else "none"
                ),
            }

        def latest_record(key):
            return latest_materializations(context.instance, [key])[key]

        newest = latest_record(asset)
        if newest is None or newest.run_id != run_id:
            return {
                "published": dg.MetadataValue.text(
                    f"not published: run {run_id} is no longer the latest materialization "
                    f"(run {newest.run_id if newest else None})"
                )
            }
        expected = expected_now(settings, graph)
        waiting = []
        for other in blocking_checks(graph, [asset]):
            stamp = stamps.get(other.name)
            if stamp is None:
                waiting.append(f"{other.name} (no pass on run {run_id})")
                continue
            problem = evidence_problem(
                other,
                expected,
                stamp["judged_inputs"] or {},
                stamp["judged_under"],
                stamp["expires_at"],
                latest_record,
                stamp["evaluated_at"],
            )
            if problem:
                waiting.append(f"{other.name} ({problem})")
        judged = {s["sha256"] for s in stamps.values() if s.get("sha256")}
        if len(judged) > 1:
            waiting.append(
                f"the passes judged different bytes of run {run_id} (sha256 "
                + ", ".join(sorted(f"{sha[:12]}…" for sha in judged))
                + "): it was written again between them"
            )
        if waiting:
            return {"published": dg.MetadataValue.text("not yet: " + "; ".join(waiting))}
        if pubs.published_run(name) == run_id:
            return {"published": dg.MetadataValue.text(f"already published (run {run_id})")}
        try:
            record = pubs.publish(name, run_id, ext, sorted(stamps), next(iter(judged), None))
        except ValueError as refused:
            return {"published": dg.MetadataValue.text(f"not published: {refused}")}
    return {"published": dg.MetadataValue.path(str(pubs.warehouse / record["path"]))}


def gate_check(**check_kwargs: Any) -> Callable[[Callable[..., Any]], dg.AssetChecksDefinition]:
    """`@dg.asset_check(blocking=True, ...)` sealed with its evidence (see module doc).

    The decorated function keeps its own parameters (the asset's value, additional
    ins, resources); the configuration resource is added when it does not ask for it.
    """
    check_kwargs.setdefault("blocking", True)

    def decorate(fn: Callable[..., dg.AssetCheckResult]) -> dg.AssetChecksDefinition:
        flags: dict[str, bool] = {}

        def sealed(context, e2i_config: ConfigResource, **kwargs):
            if flags["config"]:
                kwargs["e2i_config"] = e2i_config
            return seal(context, fn(**kwargs), e2i_config.settings())

        _, flags["config"] = with_context_and_config(sealed, fn, dg.AssetCheckExecutionContext)
        return dg.asset_check(**check_kwargs)(sealed)

    return decorate
