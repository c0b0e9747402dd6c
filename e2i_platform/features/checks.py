"""The `freshness` gate on online_features: three clocks per view, blocking."""

from datetime import UTC, datetime

import dagster as dg

from e2i_platform.features.specs import VIEWS
from e2i_platform.lib.gate_checks import gate_check
from e2i_platform.lib.gate_results import gate_result
from e2i_platform.resources.config import ConfigResource
from e2i_platform.resources.feast import FeastResource


def evaluate_freshness(feast: FeastResource, settings, now: datetime | None = None) -> list:
    """Freshness of every view (shared by the check, the sensor and the benchmark)."""
    from e2i_platform.features.freshness import view_freshness

    now = now or datetime.now(UTC)
    try:
        store = feast.store()
        store.refresh_registry()  # the registry client caches: read the current coverage
    except Exception as exc:  # registry unreadable: every view is unknown, never fresh
        from e2i_platform.features.freshness import ViewFreshness

        return [
            ViewFreshness(
                v,
                "unknown",
                f"feature store: {type(exc).__name__}: {exc}",
                settings.limits(v).max_age_hours,
                settings.limits(v).warning_hours,
            )
            for v in VIEWS
        ]
    unreachable = feast.online_store_unreachable()
    return [
        view_freshness(
            store,
            feast.offline_dir,
            view,
            now,
            settings.limits(view).max_age_hours,
            settings.limits(view).warning_hours,
            settings.sample_size,
            settings.limits(view).max_missing_share,
            online_unreachable=unreachable,
        )
        for view in VIEWS
    ]


def freshness_gate(results: list, now: datetime) -> dg.AssetCheckResult:
    from e2i_platform.features.freshness import fresh_until, overall

    status = overall(results)
    bad = [r for r in results if r.status != "fresh"]
    summary = (
        f"all {len(results)} feature views fresh"
        if not bad
        else f"feature freshness {status}: "
        + "; ".join(
            f"{r.view} {r.status}{f' [{r.kind}]' if r.kind else ''} ({r.reason})" for r in bad
        )
    )
    extra: dict = {
        "status": status,
        "views": {r.view: r.as_dict() for r in results},
        "evaluated_at": now.isoformat(timespec="seconds"),
    }
    kinds = sorted({r.kind for r in bad if r.kind})
    if kinds:
        # serving / store: a refresh helps; source: only new offline data do (a new ingest).
        extra["stale_kind"] = ",".join(kinds)
    until = fresh_until(results, now)
    if until is not None:
        extra["dagster/fresh_until_timestamp"] = dg.MetadataValue.timestamp(until)
    return gate_result(
        passed=not bad,
        blocking_failure=any(r.status in ("stale", "unknown") for r in results),
        summary=summary,
        rows_checked=sum(r.sampled for r in results),
        failing_rows=sum(r.missing for r in results),
        failure_counts={f"{r.view}: {r.status}": 1 for r in bad},
        extra=extra,
    )


@gate_check(
    asset="online_features",
    name="freshness",
    description=(
        "Per feature view: registry coverage (latest materialized window end), source "
        "freshness (newest offline event) and serving freshness (event times stored online, "
        "sampled). ERROR when a view is stale or unknown (never materialized, store "
        "unreachable), WARN in the warning band. Limits in config/feast_materialization.yaml."
    ),
)
def freshness_check(feast: FeastResource, e2i_config: ConfigResource) -> dg.AssetCheckResult:
    now = datetime.now(UTC)
    return freshness_gate(evaluate_freshness(feast, e2i_config.settings().feast, now), now)
