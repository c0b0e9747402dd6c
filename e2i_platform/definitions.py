"""The e2i_platform code location.

Lazy root: configuration is read and stage packages are imported when Dagster
builds the definitions, never at import time. Heavy libraries (great_expectations,
feast, mlflow, optuna, lightgbm, sklearn, and pandera) are imported inside asset
and check bodies only.

The root is an entry point, imported by nothing in the package: it imports every
stage (`ops` included), so a stage importing it would close a package circle. The
command lines of `ops` load it by name, as Dagster does (`ops.location`); tests and
benchmarks call `build_definitions` with settings of their own.
"""

from __future__ import annotations

import os

import dagster as dg

from e2i_platform.lib.known_warnings import ignore_known
from e2i_platform.settings import Settings, load_settings

# Known Dagster warnings we can do nothing about (see lib.known_warnings).
ignore_known()


def mlflow_resource(settings: Settings):
    from e2i_platform.resources.mlflow import MlflowResource

    cfg = settings.mlflow
    # From the environment, the URI stays an EnvVar: a password in it never reaches the UI.
    uri_from_env = os.environ.get("MLFLOW_TRACKING_URI")
    return MlflowResource(
        enabled=cfg.enabled,
        tracking_uri=dg.EnvVar("MLFLOW_TRACKING_URI")
        if uri_from_env
        else settings.under_home(cfg.tracking_uri),
        experiment=cfg.experiment,
        registered_model=cfg.registered_model,
        ui_url=cfg.ui_url,
        artifact_root=settings.under_home(cfg.artifact_root) if cfg.artifact_root else None,
        home=str(settings.home),
    )


def shared_io_manager(store_url: str | None) -> dict:
    """With a shared store, Dagster's default IO manager (the small values ops hand each
    other, e.g. hpo_study's plan for its trial slots) keeps them there too: under
    DAGSTER_HOME/storage, the launching machine's disk, no other worker could read them."""
    if not store_url:
        return {}
    return {"io_manager": dg.FilesystemIOManager(base_dir=f"{store_url.rstrip('/')}/dagster/io")}


def build_definitions(settings: Settings):
    """The code location."""
    from e2i_platform.features.assets import feature_assets
    from e2i_platform.features.checks import freshness_check
    from e2i_platform.ingest.assets import raw_assets
    from e2i_platform.ingest.checks import schema_checks
    from e2i_platform.ingest.sources import SourceResource
    from e2i_platform.lib.gates import gated_automation_sensor
    from e2i_platform.lib.ownership import with_ownership
    from e2i_platform.lib.versions import GROUP_SECTIONS, platform_version
    from e2i_platform.ops.alert_sensor import alert_sensor
    from e2i_platform.ops.execution import executor_def
    from e2i_platform.ops.feature_refresh import refresh_job, refresh_schedules
    from e2i_platform.ops.freshness_sensor import freshness_sensor
    from e2i_platform.ops.jobs import ingest_schedule, main_job
    from e2i_platform.ops.rollback import rollback_job
    from e2i_platform.promotion.assets import promotion_assets
    from e2i_platform.promotion.checks import promotion_checks
    from e2i_platform.quality.assets import validated_assets
    from e2i_platform.quality.checks import quality_checks
    from e2i_platform.resources import ConfigResource, WarehouseIOManager
    from e2i_platform.resources.feast import FeastResource
    from e2i_platform.resources.notifier import NotifierResource
    from e2i_platform.resources.storage import RecordIOManager
    from e2i_platform.training.assets import training_assets
    from e2i_platform.training.checks import no_leakage

    settings.require_shared_state()  # Celery: no store may be a file of one worker
    home = str(settings.home)
    # Durable values on this disk (None) or in the shared object store every worker reads.
    store_url = settings.platform.store.url
    gen = settings.platform.generator
    # A code version on every asset (the code and its group's configuration):
    # materializations record it, so the UI and `make run` can tell an up-to-date
    # asset from one whose code or configuration changed.
    versions = {group: platform_version(settings, group) for group in GROUP_SECTIONS}
    # Owners and stage tags from one table (lib.ownership); the online store's kind is
    # the store this environment writes.
    store_kind = {dg.AssetKey("online_features"): {settings.online_store}}
    assets = [
        a.map_asset_specs(
            lambda spec: (
                with_ownership(spec)
                .merge_attributes(kinds=store_kind.get(spec.key, set()))
                .replace_attributes(code_version=versions[spec.group_name])
            )
        )
        for a in (
            *raw_assets(),
            *validated_assets(),
            *feature_assets(),
            *training_assets(),
            *promotion_assets(),
        )
    ]
    config = ConfigResource(config_dir=str(settings.config_dir), env=settings.env)
    # Celery: every job's steps go to the workers (`make worker`); else child processes.
    distributed = executor_def(settings) if settings.platform.executor.kind == "celery" else None
    return dg.Definitions(
        assets=assets,
        asset_checks=[
            *schema_checks(),
            *quality_checks(),
            freshness_check,
            no_leakage,
            *promotion_checks(),
        ],
        jobs=[
            main_job(settings.platform.executor.max_concurrent, distributed),
            refresh_job(),
            rollback_job,
        ],
        schedules=[
            ingest_schedule(settings.platform.ingest_schedule, settings.platform.schedules_running),
            *refresh_schedules(
                settings.feast.incremental_interval_hours,
                settings.feast.full_refresh_interval_hours,
                settings.platform.schedules_running,
            ),
        ],
        sensors=[
            freshness_sensor(settings.feast.sensor_interval_seconds),
            gated_automation_sensor(),
            alert_sensor(settings.alerts.sensor_interval_seconds),
        ],
        resources={
            **shared_io_manager(store_url),
            "warehouse": WarehouseIOManager(home=home, e2i_config=config, store_url=store_url),
            "records": RecordIOManager(home=home, e2i_config=config, store_url=store_url),
            "mlflow": mlflow_resource(settings),
            "e2i_config": config,
            "notifier": NotifierResource(e2i_config=config),
            "feast": FeastResource(
                home=home,
                project=settings.platform.feature_store.project,
                online_store=settings.online_store,
                # An EnvVar keeps a password in REDIS_URL out of the UI and run config.
                redis_url=dg.EnvVar("REDIS_URL") if settings.online_store == "redis" else None,
                **FeastResource.registry_fields(settings),
                store_url=store_url,
            ),
            "source": SourceResource(
                landing_dir=SourceResource.landing_dir_for(settings.home, store_url),
                seed=gen.seed,
                patients=gen.patients,
                hcps=gen.hcps,
                history_days=gen.history_days,
                anchor_floor=gen.anchor_floor,
                anchor=gen.anchor,
                default_policy=settings.platform.sources.default,
                table_policies=dict(settings.platform.sources.tables),
            ),
        },
        executor=executor_def(settings),
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(load_settings())
