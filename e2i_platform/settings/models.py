"""Typed shape of every YAML file in config/ (one model per file).

Every model forbids unknown keys: a typo in config is an error that names the
file and the key path, never a silently ignored setting.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator

from e2i_platform.contract import INPUT_TABLES, TABLES
from e2i_platform.contract.feature_views import VIEWS
from e2i_platform.settings.alert_models import AlertSettings

Severity = Literal["critical", "warning"]
Fraction = Field(ge=0.0, le=1.0)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- config/platform.yaml ------------------------------------------------------


class ExecutorSettings(Strict):
    """How a run's steps execute: `multiprocess` (child processes of the run worker) or
    `celery` (tasks on the Celery workers of `make worker`, through the broker)."""

    kind: Literal["multiprocess", "celery"] = "multiprocess"
    max_concurrent: int = Field(2, ge=1, le=64)
    # Celery's queue for the platform's steps; workers of `make worker` listen on it.
    celery_queue: str = Field("e2i", pattern=r"^[A-Za-z0-9_.-]+$")
    # A step's task is acknowledged when it ends; one whose worker died is handed to
    # another worker after this long. Longer than the longest step, or a step still
    # running is handed out twice.
    celery_redelivery_seconds: int = Field(3600, ge=5, le=86400)


class GeneratorSettings(Strict):
    seed: int
    patients: int = Field(ge=1)
    hcps: int = Field(ge=1)
    history_days: int = Field(ge=60, le=3650)
    anchor_floor: Literal["hour", "day", "none"] = "hour"
    # A fixed end of every timeline (ISO, UTC), for reproducing a past run; default: now.
    anchor: str | None = None


class InstanceSettings(Strict):
    """Where Dagster keeps runs, events and schedules."""

    storage: Literal["sqlite", "postgres"] = "sqlite"


class FeatureStoreSettings(Strict):
    project: str = Field("e2i", pattern=r"^[a-z][a-z0-9_]*$")
    # auto: Redis when REDIS_URL is set, else SQLite.
    online_store: Literal["auto", "sqlite", "redis"] = "auto"
    # file: <home>/feast/registry.db; sql: the database of E2I_FEAST_REGISTRY_URL (Feast's
    # SQL registry, shared by every machine; the URL stays in the environment).
    registry: Literal["file", "sql"] = "file"


class StoreSettings(Strict):
    """Where durable values live (warehouse, landing, models, releases). Empty: under the
    home, on this machine's disk. A URL (`s3://bucket/prefix`): an object store every
    machine reads, through fsspec; the endpoint and credentials come from the
    environment (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)."""

    url: str | None = None

    @model_validator(mode="after")
    def _a_bucket_url_without_credentials(self):
        # Credentials in the URL would reach the run config, the UI and every log line
        # that names a stored path; only S3-compatible stores are built and tested.
        if not self.url:
            return self
        parts = urlsplit(self.url)
        if parts.username or parts.password or parts.query:
            raise ValueError(
                "platform.store.url must not carry credentials or options (user, password "
                "or query): set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and "
                "AWS_ENDPOINT_URL in the environment"
            )
        if parts.scheme != "s3" or not parts.hostname:
            # The scheme only: the rest of a URL may hold what should not be repeated.
            raise ValueError(
                f"platform.store.url has scheme {parts.scheme or '(none)'!r}: expected "
                "s3://bucket[/prefix] (an S3-compatible store; its endpoint from "
                "AWS_ENDPOINT_URL)"
            )
        return self


SourcePolicy = Literal["landing", "generator", "auto"]


class SourceSettings(Strict):
    """Where each input table comes from: `landing` (its file in $E2I_HOME/landing/ must
    exist), `generator` (always generated, a landing file is ignored), `auto` (the
    landing file when there is one, else the generator)."""

    default: SourcePolicy = "auto"
    tables: dict[str, SourcePolicy] = {}

    @model_validator(mode="after")
    def _known_tables(self):
        unknown = sorted(set(self.tables) - set(INPUT_TABLES))
        if unknown:
            raise ValueError(f"unknown input table(s) {unknown}; known: {list(INPUT_TABLES)}")
        return self

    def policy(self, table: str) -> str:
        return self.tables.get(table, self.default)


class RetrySettings(Strict):
    """Retries of a transient failure (lib.transient) in steps that talk to a store."""

    max_retries: int = Field(3, ge=0, le=10)
    first_wait_seconds: float = Field(2.0, ge=0, le=300)


class PlatformSettings(Strict):
    home: str
    executor: ExecutorSettings = ExecutorSettings()
    generator: GeneratorSettings
    sources: SourceSettings = SourceSettings()
    retries: RetrySettings = RetrySettings()
    instance: InstanceSettings = InstanceSettings()
    feature_store: FeatureStoreSettings = FeatureStoreSettings()
    store: StoreSettings = StoreSettings()
    ingest_schedule: str = "0 5 * * *"
    # Whether the three schedules start RUNNING when a daemon first sees them (the
    # freshness sensor always does; the automation sensor never: see README).
    schedules_running: bool = False


# --- config/quality.yaml -------------------------------------------------------


class Range(Strict):
    min: float
    max: float

    @model_validator(mode="after")
    def _ordered(self):
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class RowCountRule(Range):
    min: int = Field(ge=0)
    max: int = Field(ge=1)
    severity: Severity = "critical"


class NullFractionRule(Strict):
    max: float = Fraction
    severity: Severity = "warning"


class EnumRule(Strict):
    mostly: float = Fraction
    severity: Severity = "critical"


class DistributionRule(Strict):
    mean: Range | None = None
    quantiles: dict[float, Range] = {}
    severity: Severity = "warning"

    @model_validator(mode="after")
    def _something(self):
        if self.mean is None and not self.quantiles:
            raise ValueError("give a mean range, quantile ranges, or both")
        if bad := [q for q in self.quantiles if not 0.0 <= q <= 1.0]:
            raise ValueError(f"quantiles must lie in [0, 1], got {bad}")
        return self


class RecencyRule(Strict):
    max_source_age_days: float = Field(gt=0)
    severity: Severity = "critical"


class UniquenessRule(Strict):
    severity: Severity = "critical"


class TableQuality(Strict):
    row_count: RowCountRule
    null_fraction: dict[str, NullFractionRule] = {}
    enums: EnumRule = EnumRule(mostly=1.0)
    compound_unique: UniquenessRule = UniquenessRule()
    distributions: dict[str, DistributionRule] = {}
    recency: RecencyRule


class QualitySettings(Strict):
    tables: dict[str, TableQuality]
    # A timestamp later than the run time by more than this fails the schema gate.
    future_tolerance_minutes: float = Field(5, ge=0)

    @model_validator(mode="after")
    def _match_contract(self):
        if missing := set(INPUT_TABLES) - set(self.tables):
            raise ValueError(f"no quality rules for tables {sorted(missing)}")
        for name, rules in self.tables.items():
            if name not in INPUT_TABLES:
                raise ValueError(f"tables.{name}: not an input table of the contract")
            spec = TABLES[name]
            for col in rules.null_fraction:
                if col not in spec.column_names:
                    raise ValueError(f"tables.{name}.null_fraction.{col}: no such column")
                if not spec.column(col).nullable:
                    raise ValueError(
                        f"tables.{name}.null_fraction.{col}: the contract makes it required"
                    )
            for col in rules.distributions:
                if col not in spec.column_names or spec.column(col).dtype not in ("int", "float"):
                    raise ValueError(
                        f"tables.{name}.distributions.{col}: not a numeric column of {name}"
                    )
        return self


# --- config/feast_materialization.yaml ---------------------------------------------


class FreshnessLimits(Strict):
    max_age_hours: float = Field(gt=0)
    warning_hours: float = Field(gt=0)
    # Share of sampled entities that may be missing online; above it the view is stale.
    max_missing_share: float = Field(0.05, ge=0, le=1)

    @model_validator(mode="after")
    def _ordered(self):
        if self.warning_hours >= self.max_age_hours:
            raise ValueError(
                f"warning_hours ({self.warning_hours}) must be below max_age_hours "
                f"({self.max_age_hours})"
            )
        return self


class RefreshAttempts(Strict):
    """How the freshness sensor heals a view a refresh can help: up to `attempts`
    refreshes for one stale state, waiting `first_wait_minutes` after the first that did
    not heal it and twice as long after each next; then it escalates (an alert) and stops
    refreshing until the state changes."""

    attempts: int = Field(3, ge=1, le=20)
    first_wait_minutes: float = Field(5, ge=0, le=24 * 60)


class FeastMaterializationSettings(Strict):
    freshness: FreshnessLimits = FreshnessLimits(max_age_hours=2, warning_hours=1)
    views: dict[str, FreshnessLimits] = {}
    sample_size: int = Field(200, ge=1, le=100_000)
    snapshot_weeks: int = Field(26, ge=1, le=520)
    incremental_interval_hours: int = Field(1, ge=1, le=24)
    full_refresh_interval_hours: int = Field(24, ge=1, le=24 * 7)
    sensor_interval_seconds: int = Field(300, ge=30)
    max_clock_skew_minutes: float = Field(5, ge=0)
    refresh: RefreshAttempts = RefreshAttempts()

    @model_validator(mode="after")
    def _known_views(self):
        if unknown := sorted(set(self.views) - set(VIEWS)):
            raise ValueError(f"views.{unknown[0]}: not a feature view (known: {sorted(VIEWS)})")
        return self

    def limits(self, view: str) -> FreshnessLimits:
        return self.views.get(view, self.freshness)


# --- config/training.yaml ------------------------------------------------------------


class DatasetSettings(Strict):
    cutoff_every_days: int = Field(ge=1)
    outcome_window_days: int = Field(ge=1)
    history_days: int = Field(ge=30)
    validation_fraction: float = Field(gt=0, lt=0.5)
    test_fraction: float = Field(gt=0, lt=0.5)


class LeakageSettings(Strict):
    # A feature (any dtype) whose values alone rank the label with ROC-AUC above this, in
    # either direction, is a leak; so is a feature whose null pattern alone does.
    max_single_feature_auc: float = Field(0.95, gt=0.5, le=1)
    # A text feature with more than this share of rows holding a value seen only once is
    # ID-like: its category rates cannot be scored out of fold, so it fails.
    max_text_singleton_share: float = Field(0.5, gt=0, le=1)
    prevalence: Range


RunMode = Literal["reuse_if_exists", "force_new", "resume_if_incomplete", "continue_from_previous"]


class TrainingSettings(Strict):
    dataset: DatasetSettings
    leakage: LeakageSettings
    model_name: str = Field("discontinuation_lgbm", pattern=r"^[a-z][a-z0-9_]*$")
    run_mode: RunMode = "reuse_if_exists"
    seed: int = 7
    # continue_from_previous: boosting rounds added on top of the previous model.
    continue_rounds: int = Field(50, ge=1)


# --- config/optuna_config.yaml ---------------------------------------------------------
# `<home>` in a URL stands for E2I_HOME (resolved when the definitions are built).


class SamplerSettings(Strict):
    seed: int = 42
    n_startup_trials: int = Field(8, ge=0)


class PrunerSettings(Strict):
    """Hyperband over boosting rounds."""

    min_resource: int = Field(10, ge=1)
    reduction_factor: int = Field(3, ge=2)


class WarmStartSettings(Strict):
    enabled: bool = True
    min_similarity: float = Field(0.7, ge=0, le=1)
    max_seed_studies: int = Field(3, ge=1)
    max_seed_trials: int = Field(20, ge=0)
    # Per seeding study, when its search space differs: its best params, clipped.
    top_k: int = Field(5, ge=0)  # 0: copy trials only, re-evaluate none


class TuningSampleSettings(Strict):
    # Above this many training-split rows the search tunes on a stratified sample of whole
    # patients (train and validation splits alike); the final model trains on every row.
    max_train_rows: int = Field(60_000, ge=1_000)
    seed: int = 0


class OptunaSettings(Strict):
    storage: str
    study_prefix: str = Field("discontinuation", pattern=r"^[a-z][a-z0-9_]*$")
    n_trials: int = Field(30, ge=1)
    timeout_s: float | None = Field(600, gt=0)
    max_boost_rounds: int = Field(300, ge=10)
    early_stopping_rounds: int = Field(30, ge=1)
    # RDB storage: a trial's process writes a heartbeat this often; a RUNNING trial silent
    # longer than the grace period (> interval) is failed when any trial of its study starts.
    heartbeat_interval_s: int = Field(30, ge=1)
    heartbeat_grace_s: int = Field(120, ge=2)
    # Trial workers hpo_study fans out to (parallel steps on one shared study; each runs
    # single-threaded trials until the study's trial budget is spent). 1: one step.
    parallel_workers: int = Field(1, ge=1, le=64)
    sampler: SamplerSettings = SamplerSettings()
    pruner: PrunerSettings = PrunerSettings()
    warm_start: WarmStartSettings = WarmStartSettings()
    tuning_sample: TuningSampleSettings = TuningSampleSettings()


# --- config/mlflow.yaml ----------------------------------------------------------------


class MlflowSettings(Strict):
    enabled: bool = True
    tracking_uri: str
    experiment: str = "e2i_discontinuation"
    registered_model: str = Field("e2i_discontinuation", pattern=r"^[A-Za-z][A-Za-z0-9_.-]*$")
    # Where a database-backed store (SQLite, PostgreSQL) puts artifacts: a path (`<home>`
    # allowed) or a URI. None: next to a SQLite DB, `<home>/mlflow/artifacts` for another
    # database. A tracking server keeps its own.
    artifact_root: str | None = None
    # Where people open the MLflow UI (links in asset metadata); None: the tracking
    # server itself, or `mlflow ui`'s default address for a local store.
    ui_url: str | None = Field(None, pattern=r"^https?://[^/?#]+")


# --- config/promotion.yaml -------------------------------------------------------------


class QualityGateSettings(Strict):
    min_roc_auc: float = Field(ge=0.5, le=1)
    # Not worse than the current champion by more than this (same test split metric).
    champion_tolerance: float = Field(ge=0, le=0.5)


class CalibrationGateSettings(Strict):
    max_brier: float = Field(gt=0, le=1)


class LatencyGateSettings(Strict):
    batch_rows: int = Field(1000, ge=1)
    repeats: int = Field(30, ge=5)
    max_p95_ms: float = Field(gt=0)


class FairnessGateSettings(Strict):
    max_region_auc_gap: float = Field(gt=0, le=1)
    # Regions with fewer test rows (or one class only) are reported, not compared.
    min_region_rows: int = Field(30, ge=1)


class CostGateSettings(Strict):
    # What producing the model took: wall seconds of the hpo_study and trained_model
    # steps that produced it (a reused study or model counts what it cost then).
    max_production_seconds: float = Field(gt=0)
    # The files the trained model wrote (model.txt, metrics.json, metadata.json).
    max_model_mb: float = Field(gt=0)
    # CPU seconds to score 1M rows on one core (LightGBM num_threads=1), measured in
    # model_evaluation with the latency gate's batches.
    max_scoring_cpu_seconds_per_million: float = Field(gt=0)


class PromotionSettings(Strict):
    quality_gate: QualityGateSettings
    calibration_gate: CalibrationGateSettings
    latency_gate: LatencyGateSettings
    fairness_gate: FairnessGateSettings
    cost_gate: CostGateSettings


CONFIG_FILES: dict[str, type[Strict]] = {
    "platform": PlatformSettings,
    "quality": QualitySettings,
    "feast_materialization": FeastMaterializationSettings,
    "training": TrainingSettings,
    "optuna_config": OptunaSettings,
    "mlflow": MlflowSettings,
    "promotion": PromotionSettings,
    "alerts": AlertSettings,
}
