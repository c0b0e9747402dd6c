"""Feature assets: offline feature tables, the Feast registry, the online store."""

import hashlib
from datetime import UTC, datetime, timedelta

import dagster as dg

from e2i_platform.features.specs import EVENT_TIMESTAMP, VIEWS
from e2i_platform.lib.gates import gated_asset
from e2i_platform.lib.table_metadata import feature_docs, table_metadata
from e2i_platform.resources.config import ConfigResource
from e2i_platform.resources.feast import FeastResource

FEATURE_ASSET = {
    "group_name": "features",
    "kinds": {"pandas", "parquet"},
    "io_manager_key": "warehouse",
}


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _snapshots(e2i_config: ConfigResource, **tables):
    from e2i_platform.features.compute import snapshot_plan

    weeks = e2i_config.settings().feast.snapshot_weeks
    return snapshot_plan(tables, weeks)


def _output(df, view: str, as_of) -> dg.Output:
    keys = list(VIEWS[view].join_keys)
    return dg.Output(
        df,
        metadata={
            **table_metadata(df, feature_docs(view)),
            "as_of": dg.MetadataValue.text(str(as_of)),
            "snapshots": dg.MetadataValue.int(int(df[EVENT_TIMESTAMP].nunique())),
            "entities_in_newest_snapshot": dg.MetadataValue.int(
                int(
                    df.loc[df[EVENT_TIMESTAMP] == df[EVENT_TIMESTAMP].max(), keys]
                    .drop_duplicates()
                    .shape[0]
                )
                if len(df)
                else 0
            ),
        },
    )


@gated_asset(**FEATURE_ASSET)
def patient_features(patient_journeys, treatment_events, e2i_config: ConfigResource):
    """Patient activity and clinical profile at weekly snapshots up to the data's as-of time:
    event counts and costs, adverse-event rate, days since the last event and on therapy,
    engagement, severity, payer and age band of the latest journey. Only events and journeys
    known at each snapshot; never journey status, end date or the discontinuation flag.
    Offline source of the Feast view `patient_features`."""
    from e2i_platform.features.compute import patient_features as compute

    as_of, snaps = _snapshots(
        e2i_config, patient_journeys=patient_journeys, treatment_events=treatment_events
    )
    return _output(
        compute(patient_journeys, treatment_events, snaps, _now()), "patient_features", as_of
    )


@gated_asset(**FEATURE_ASSET)
def hcp_features(hcp_profiles, patient_journeys, treatment_events, e2i_config: ConfigResource):
    """HCP profile (as known at each snapshot, by `updated_at`) and the recent outcomes of the
    HCP's patients: patients treated, adverse-event share of their last 180 days of events.
    Offline source of the Feast view `hcp_features`."""
    from e2i_platform.features.compute import hcp_features as compute

    as_of, snaps = _snapshots(
        e2i_config,
        hcp_profiles=hcp_profiles,
        patient_journeys=patient_journeys,
        treatment_events=treatment_events,
    )
    return _output(
        compute(hcp_profiles, patient_journeys, treatment_events, snaps, _now()),
        "hcp_features",
        as_of,
    )


@gated_asset(**FEATURE_ASSET)
def trigger_features(triggers, patient_journeys, e2i_config: ConfigResource):
    """Next-best-action triggers per patient at weekly snapshots: counts over 30 days,
    critical ones, acceptance rate and mean confidence over 90 days (zero when none).
    Offline source of the Feast view `trigger_features`."""
    from e2i_platform.features.compute import trigger_features as compute

    as_of, snaps = _snapshots(e2i_config, triggers=triggers, patient_journeys=patient_journeys)
    return _output(compute(triggers, patient_journeys, snaps, _now()), "trigger_features", as_of)


@gated_asset(**FEATURE_ASSET)
def market_features(business_metrics, e2i_config: ConfigResource):
    """Brand KPIs by brand and region over the 30 days before each snapshot: mean
    achievement, mean market share, net sales. Offline source of the Feast view
    `market_features` (daily data: its freshness limits are relaxed in config)."""
    from e2i_platform.features.compute import market_features as compute

    as_of, snaps = _snapshots(e2i_config, business_metrics=business_metrics)
    return _output(compute(business_metrics, snaps, _now()), "market_features", as_of)


_VOLATILE = frozenset({"created_timestamp", "last_updated_timestamp"})


def _without_timestamps(message):
    """A copy of a proto without the bookkeeping timestamps Feast stamps on every apply."""
    from google.protobuf.message import Message

    copy = type(message)()
    copy.CopyFrom(message)
    stack = [copy]
    while stack:
        msg = stack.pop()
        for field, value in msg.ListFields():
            if field.name in _VOLATILE and field.message_type is not None:
                msg.ClearField(field.name)
            elif field.message_type is not None:
                if field.label == field.LABEL_REPEATED:
                    values = value.values() if hasattr(value, "values") else value
                    stack.extend(v for v in values if isinstance(v, Message))
                else:
                    stack.append(value)
    return copy


def registry_fingerprint(store) -> str:
    """Hash of every applied object's spec (stable across re-applies of the same repo)."""
    project = store.project
    registry = store.registry
    specs = []
    for kind, objects in (
        ("entity", registry.list_entities(project)),
        ("feature_view", registry.list_feature_views(project)),
        ("feature_service", registry.list_feature_services(project)),
    ):
        for obj in objects:
            spec = _without_timestamps(obj.to_proto().spec)
            specs.append((kind, obj.name, spec.SerializeToString(deterministic=True)))
    digest = hashlib.sha256()
    for kind, name, blob in sorted(specs):
        digest.update(kind.encode() + b"\0" + name.encode() + b"\0" + blob)
    return digest.hexdigest()


def record_infra(store) -> None:
    """Record the online tables in the registry as `feast apply` does. `FeatureStore.apply`
    creates them but leaves the registry's infra empty, so `feast plan` would list every
    table as still to be created."""
    infra = store.provider.plan_infra(store.config, store.registry.proto())
    store.registry.update_infra(infra, store.project, commit=True)


def apply_repository(feast: FeastResource) -> tuple[list, str]:
    """Apply the repository's objects to `feast`'s registry (its file, or the SQL
    registry every machine shares) as `feast apply` does; the objects and the
    fingerprint of what the registry then holds for the project."""
    from e2i_platform.features.repo_objects import build_objects

    store = feast.store()
    objects = build_objects(feast.offline_dir)
    store.apply(objects)
    record_infra(store)
    store.refresh_registry()
    return objects, registry_fingerprint(store)


@gated_asset(group_name="features", kinds={"feast"}, deps=list(VIEWS))
def feature_registry(feast: FeastResource) -> dg.MaterializeResult:
    """`feast apply` of the repository in `feature_repo/`: entities (patient, hcp, brand,
    region), the four feature views over the offline Parquet, and the feature service
    `discontinuation_model_v1`. Its data version is a hash of the applied specs."""
    objects, fingerprint = apply_repository(feast)
    return dg.MaterializeResult(
        data_version=dg.DataVersion(fingerprint[:16]),
        metadata={
            "registry_hash": dg.MetadataValue.text(fingerprint),
            "objects": dg.MetadataValue.json(
                sorted(f"{type(o).__name__}:{o.name}" for o in objects)
            ),
            "store": dg.MetadataValue.json(feast.describe()),
        },
    )


class MaterializationConfig(dg.Config):
    """incremental: from each view's last window end (everything the first time);
    full: all offline data; window: exactly [start, end] (ISO timestamps, UTC)."""

    mode: str = "incremental"
    start: str | None = None
    end: str | None = None


def _utc(text: str, field: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise dg.Failure(f"online_features: {field}={text!r} is not an ISO timestamp") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def plan_windows(
    config: MaterializationConfig, store, offline_dir, now: datetime, settings
) -> tuple[dict, dict[str, str]]:
    """The window per view, and why a view's incremental window was widened to all of
    its offline data (a store that lost what it held: a restarted Redis, a deleted
    SQLite file) -- decided from what the store actually holds, on a sample of the
    newest snapshot, since the registry's coverage clock does not know."""
    from e2i_platform.features.freshness import missing_online
    from e2i_platform.features.materialize import MODES, Window
    from e2i_platform.features.offline import earliest_event

    skew = timedelta(minutes=settings.max_clock_skew_minutes)

    if config.mode not in MODES:
        raise dg.Failure(f"online_features: mode {config.mode!r} is not one of {MODES}")
    if config.mode == "window":
        if not (config.start and config.end):
            raise dg.Failure("online_features: mode 'window' needs both start and end")
        start, end = _utc(config.start, "start"), _utc(config.end, "end")
        if end > now + skew:
            raise dg.Failure(
                f"online_features: window end {end.isoformat()} is in the future "
                f"(now {now.isoformat()}, allowed clock skew {skew})"
            )
        if start >= end:
            raise dg.Failure(f"online_features: window start {start} is not before end {end}")
        return {view: Window(start, end) for view in VIEWS}, {}
    windows, refills = {}, {}
    for view in VIEWS:
        start = earliest_event(offline_dir, view) or now
        last = store.get_feature_view(view).most_recent_end_time
        if config.mode == "incremental" and last is not None:
            sampled, missing = missing_online(store, offline_dir, view, settings.sample_size)
            tolerated = settings.limits(view).max_missing_share
            if sampled and missing / sampled > tolerated:
                refills[view] = (
                    f"{missing} of {sampled} sampled entities of the newest snapshot missing "
                    f"online (> {tolerated:.1%} tolerated): refilled from the first event"
                )
            else:
                start = last if last.tzinfo else last.replace(tzinfo=UTC)
        windows[view] = Window(min(start, now), now)
    return windows, refills


@gated_asset(group_name="features", kinds={"feast"}, deps=["feature_registry"])
def online_features(
    context: dg.AssetExecutionContext,
    config: MaterializationConfig,
    feast: FeastResource,
    e2i_config: ConfigResource,
) -> dg.MaterializeResult:
    """Feature values in the online store (SQLite by default, Redis with REDIS_URL or in
    prod), written from the offline tables over explicit, recorded windows. Never replaces
    a newer online value with an older one. An unreachable store fails the step before
    anything is written or the coverage clock moves; an incremental run on a store that
    lost its data refills the views it lost (metadata `refilled`). Gated by `freshness`,
    measured on the registry, the offline source and the values actually served."""
    from e2i_platform.features.materialize import materialize_view

    settings = e2i_config.settings().feast
    # Unreachable: fail (and retry: transient) before the registry's coverage clock moves.
    feast.ping_online_store()
    store = feast.store()
    now = datetime.now(UTC)
    windows, refills = plan_windows(config, store, feast.offline_dir, now, settings)
    for view, why in refills.items():
        context.log.warning(f"{view}: {why}")
    redis_client = feast.redis_client()
    results = [
        materialize_view(store, view, window, redis_client) for view, window in windows.items()
    ]
    for r in results:
        context.log.info(
            f"{r.view}: {r.entities_written} entities written for "
            f"[{r.start}, {r.end}] ({r.skipped_not_newer} kept: not newer)"
        )
    return dg.MaterializeResult(
        metadata={
            "mode": dg.MetadataValue.text(config.mode),
            # Views whose incremental window became a refill (the store had lost them).
            "refilled": dg.MetadataValue.json(refills),
            "windows": dg.MetadataValue.json(
                {r.view: {"start": r.start, "end": r.end} for r in results}
            ),
            "per_view": dg.MetadataValue.json([r.as_dict() for r in results]),
            "entities_written": dg.MetadataValue.int(sum(r.entities_written for r in results)),
            "store": dg.MetadataValue.json(feast.describe()),
        }
    )


def feature_assets() -> list[dg.AssetsDefinition]:
    return [
        patient_features,
        hcp_features,
        trigger_features,
        market_features,
        feature_registry,
        online_features,
    ]
