"""The E2I data contract: every table, column, dtype, enum, range and row rule.

This is the one vocabulary of the platform. Pandera models, Great Expectations
suites, the generator, Feast sources and the tests all derive from it; no other
module spells a column name or an enum value of its own.

Pure Python on purpose (no pandas at import): the Dagster definitions read it
while loading, and the code location must load light.

Conventions: timestamps and dates are timezone-naive UTC (`datetime64[ns]`);
identifiers are strings; flags are booleans except where the source system
encodes them as 0/1 integers (`academic_hcp`, `prediction_class`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Dtype = Literal["str", "int", "float", "bool", "datetime"]

# --- enums ---------------------------------------------------------------------

ENUMS: dict[str, tuple[str, ...]] = {
    "brand": ("Remibrutinib", "Fabhalta", "Kisqali", "competitor", "other"),
    "region": ("northeast", "south", "midwest", "west"),
    "journey_stage": (
        "diagnosis",
        "initial_treatment",
        "treatment_optimization",
        "maintenance",
        "treatment_switch",
    ),
    "journey_status": ("active", "stable", "transitioning", "completed"),
    "event_type": (
        "diagnosis",
        "prescription",
        "lab_test",
        "procedure",
        "consultation",
        "hospitalization",
    ),
    "priority": ("critical", "high", "medium", "low"),
    "prediction_type": ("trigger", "propensity", "risk", "churn", "next_best_action"),
    "agent_tier": (
        "coordination",
        "causal_analytics",
        "monitoring",
        "ml_predictions",
        "self_improvement",
    ),
    "gender": ("M", "F", "U"),
    "age_group": ("18-34", "35-49", "50-64", "65+"),
    "insurance_type": ("commercial", "medicare", "medicaid", "cash", "other"),
    "adoption_category": (
        "innovator",
        "early_adopter",
        "early_majority",
        "late_majority",
        "laggard",
    ),
    "data_split": ("train", "validation", "test", "holdout", "unassigned"),
    # Enums the spec leaves to this module.
    "specialty": (
        "hematology",
        "oncology",
        "nephrology",
        "dermatology",
        "allergy_immunology",
        "rheumatology",
        "primary_care",
    ),
    "practice_type": ("academic", "community", "hospital", "private"),
    "trigger_type": (
        "refill_gap",
        "adverse_event_risk",
        "switch_risk",
        "new_diagnosis",
        "lab_result",
        "engagement_drop",
    ),
    "delivery_channel": ("crm", "email", "mobile", "rep_visit"),
    "delivery_status": ("pending", "delivered", "failed", "expired"),
    "acceptance_status": ("pending", "accepted", "rejected", "ignored"),
    "metric_type": ("sales", "market_share", "adoption", "engagement", "persistence"),
    "causal_method": ("pc", "ges", "lingam", "notears", "dowhy"),
    "validation_status": ("validated", "pending", "refuted"),
    "activity_type": ("analysis", "prediction", "monitoring", "retraining", "report"),
    "activity_status": ("success", "partial", "failed", "timeout"),
}

# --- identifier formats --------------------------------------------------------

HCP_ID = r"^HCP\d{8}$"
PATIENT_ID = r"^PAT\d{8}$"
JOURNEY_ID = r"^PJ\d{16}$"
TREATMENT_EVENT_ID = r"^TE\d+$"
TRIGGER_ID = r"^TRG\d+$"
NPI = r"^\d{10}$"
NPI_LUHN_PREFIX = "80840"  # NPIs are Luhn-checked with the US health-industry prefix
STATE = r"^[A-Z]{2}$"


# --- building blocks -----------------------------------------------------------


@dataclass(frozen=True)
class Column:
    name: str
    dtype: Dtype
    description: str
    nullable: bool = False
    unique: bool = False
    enum: str | None = None  # key into ENUMS
    values: tuple[Any, ...] | None = None  # a closed set that is not a named enum
    min: float | None = None
    max: float | None = None
    pattern: str | None = None
    luhn_prefix: str | None = None
    # Datetime columns hold observations of the past: a value later than the run time
    # (plus the configured tolerance) is a schema failure unless the column is marked
    # `future_ok` (a planned or expected time). No column is today.
    future_ok: bool = False
    # Float columns must be finite (no inf or -inf; NaN is a null, governed by
    # `nullable`) unless marked `finite=False`. No column allows infinities today.
    finite: bool = True

    @property
    def allowed(self) -> tuple[Any, ...] | None:
        """The closed set of values, from a named enum or an inline set."""
        return ENUMS[self.enum] if self.enum else self.values


@dataclass(frozen=True)
class ForeignKey:
    """`column` resolves to `table.ref_column`; optionally a child time column must not
    precede a parent time column (`not_before=(child_column, parent_column)`)."""

    column: str
    table: str
    ref_column: str
    not_before: tuple[str, str] | None = None


@dataclass(frozen=True)
class NotBefore:
    """`later` is on or after `earlier` (null `later` allowed when the column is nullable)."""

    earlier: str
    later: str

    @property
    def name(self) -> str:
        return f"{self.later} >= {self.earlier}"

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.earlier, self.later)

    def holds(self, df):
        return _unless_missing(df, self.columns, df[self.later] >= df[self.earlier])


@dataclass(frozen=True)
class IsRatio:
    """`result` equals `numerator / denominator` within a relative tolerance."""

    result: str
    numerator: str
    denominator: str
    rtol: float = 1e-6

    @property
    def name(self) -> str:
        return f"{self.result} = {self.numerator} / {self.denominator}"

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.result, self.numerator, self.denominator)

    def holds(self, df):
        import numpy as np

        # Rows with a missing or infinite input are judged by that column's own rules;
        # on the others the quotient must be finite (1e300 / 1e-12 is not) and match.
        inputs = [df[c].to_numpy(dtype=np.float64, na_value=np.nan) for c in self.columns]
        result, numerator, denominator = inputs
        judged = np.isfinite(result) & np.isfinite(numerator) & np.isfinite(denominator)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            expected = numerator / denominator
            close = np.abs(result - expected) <= self.rtol * np.abs(expected)
        return _rowwise(df, ~judged | (np.isfinite(expected) & close))


@dataclass(frozen=True)
class Differ:
    """`a` and `b` differ on every row."""

    a: str
    b: str

    @property
    def name(self) -> str:
        return f"{self.a} != {self.b}"

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.a, self.b)

    def holds(self, df):
        return _unless_missing(df, self.columns, df[self.a] != df[self.b])


RowRule = NotBefore | IsRatio | Differ


def _unless_missing(df, columns: tuple[str, ...], holds):
    """A row rule's verdict, true where any of its columns is null: a missing value is
    the failure of that column's own not-null rule (or allowed), never the row rule's,
    and a null comparison (pd.NA) never reaches Pandera."""
    import numpy as np

    missing = np.zeros(len(df), dtype=bool)
    for c in columns:
        missing |= df[c].isna().to_numpy()
    return _rowwise(df, missing | holds.to_numpy(dtype=bool, na_value=True))


def _rowwise(df, verdict):
    import pandas as pd

    return pd.Series(verdict, index=df.index, dtype=bool)


@dataclass(frozen=True)
class Table:
    name: str
    description: str
    columns: tuple[Column, ...]
    primary_key: str
    event_time: str  # the column recency and freshness are measured on
    loaded_at: str | None = None  # when rows reached the platform, if the source says
    natural_key: tuple[str, ...] = ()
    foreign_keys: tuple[ForeignKey, ...] = ()
    rules: tuple[RowRule, ...] = ()
    produced: bool = False  # written by the platform, not ingested

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"table {self.name!r} has no column {name!r}")


def _id(name: str, pattern: str, description: str, **kw: Any) -> Column:
    return Column(name, "str", description, pattern=pattern, **kw)


def _score(name: str, hi: float, description: str, **kw: Any) -> Column:
    return Column(name, "float", description, min=0.0, max=hi, **kw)


# --- tables --------------------------------------------------------------------

HCP_PROFILES = Table(
    name="hcp_profiles",
    description="Healthcare professionals targeted by the commercial team.",
    primary_key="hcp_id",
    event_time="updated_at",
    columns=(
        _id("hcp_id", HCP_ID, "HCP identifier", unique=True),
        Column(
            "npi",
            "str",
            "National Provider Identifier (Luhn with prefix 80840)",
            unique=True,
            pattern=NPI,
            luhn_prefix=NPI_LUHN_PREFIX,
        ),
        Column("specialty", "str", "Clinical specialty", enum="specialty"),
        Column("practice_type", "str", "Practice setting", enum="practice_type"),
        Column("geographic_region", "str", "US census region", enum="region"),
        Column("state", "str", "Two-letter state code", pattern=STATE),
        Column("priority_tier", "int", "Commercial priority, 1 highest", min=1, max=5),
        Column("decile", "int", "Prescribing decile", min=1, max=10),
        Column("years_experience", "int", "Years in practice", min=0, max=70),
        _score("digital_engagement_score", 1.0, "Engagement with digital channels"),
        _score("peer_influence_score", 1.0, "Influence on peers"),
        Column("adoption_category", "str", "Rogers adoption category", enum="adoption_category"),
        Column("territory_id", "str", "Sales territory", pattern=r"^TER\d{4}$"),
        Column("updated_at", "datetime", "When the profile was last updated at the source"),
    ),
)

PATIENT_JOURNEYS = Table(
    name="patient_journeys",
    description="One row per patient treatment journey with a brand.",
    primary_key="patient_journey_id",
    event_time="source_timestamp",
    loaded_at="ingestion_timestamp",
    natural_key=("patient_id", "brand", "journey_start_date"),
    foreign_keys=(ForeignKey("hcp_id", "hcp_profiles", "hcp_id"),),
    rules=(
        NotBefore("journey_start_date", "journey_end_date"),
        NotBefore("source_timestamp", "ingestion_timestamp"),
    ),
    columns=(
        _id("patient_journey_id", JOURNEY_ID, "Journey identifier", unique=True),
        _id("patient_id", PATIENT_ID, "Patient identifier"),
        _id("hcp_id", HCP_ID, "Treating HCP"),
        Column("brand", "str", "Brand of the journey", enum="brand"),
        Column("journey_stage", "str", "Current stage", enum="journey_stage"),
        Column(
            "journey_status",
            "str",
            "Status (outcome-derived: never a feature)",
            enum="journey_status",
        ),
        Column("journey_start_date", "datetime", "Journey start"),
        Column(
            "journey_end_date",
            "datetime",
            "Journey end (outcome-derived: never a feature)",
            nullable=True,
        ),
        Column("geographic_region", "str", "Patient region", enum="region"),
        Column("age_group", "str", "Age band", enum="age_group"),
        Column("gender", "str", "Gender", enum="gender"),
        Column("insurance_type", "str", "Payer type", enum="insurance_type"),
        _score("disease_severity", 10.0, "Clinical severity score"),
        _score("engagement_score", 10.0, "Patient engagement score"),
        Column("academic_hcp", "int", "Treated at an academic centre (0/1)", values=(0, 1)),
        _score("data_quality_score", 1.0, "Source data quality"),
        Column("source_timestamp", "datetime", "When the source system recorded the row"),
        Column("ingestion_timestamp", "datetime", "When the row reached the platform"),
        Column("data_split", "str", "ML split assignment", enum="data_split"),
    ),
)

TREATMENT_EVENTS = Table(
    name="treatment_events",
    description="Clinical and commercial events along a patient journey.",
    primary_key="treatment_event_id",
    event_time="event_date",
    natural_key=("patient_journey_id", "sequence_number"),
    foreign_keys=(
        ForeignKey(
            "patient_journey_id",
            "patient_journeys",
            "patient_journey_id",
            not_before=("event_date", "journey_start_date"),
        ),
    ),
    columns=(
        _id("treatment_event_id", TREATMENT_EVENT_ID, "Event identifier", unique=True),
        _id("patient_journey_id", JOURNEY_ID, "Journey the event belongs to"),
        _id("patient_id", PATIENT_ID, "Patient identifier"),
        _id("hcp_id", HCP_ID, "HCP involved"),
        Column("event_date", "datetime", "When the event happened (>= journey start)"),
        Column("event_type", "str", "Kind of event", enum="event_type"),
        Column("brand", "str", "Brand involved", enum="brand"),
        Column("cost", "float", "Cost in USD", min=0.0),
        Column("adverse_event_flag", "bool", "An adverse event was reported"),
        Column("discontinuation_flag", "bool", "Therapy was discontinued (the ML label source)"),
        Column("sequence_number", "int", "Position in the journey, from 1", min=1),
        Column("days_from_diagnosis", "int", "Days since the journey started", min=0),
    ),
)

TRIGGERS = Table(
    name="triggers",
    description="Next-best-action triggers sent to field and digital channels.",
    primary_key="trigger_id",
    event_time="trigger_timestamp",
    columns=(
        _id("trigger_id", TRIGGER_ID, "Trigger identifier", unique=True),
        _id("patient_id", PATIENT_ID, "Patient the trigger is about"),
        _id("hcp_id", HCP_ID, "HCP the trigger is for"),
        Column("trigger_timestamp", "datetime", "When the trigger fired"),
        Column("trigger_type", "str", "Why it fired", enum="trigger_type"),
        Column("priority", "str", "Priority", enum="priority"),
        _score("confidence_score", 1.0, "Model confidence"),
        Column("lead_time_days", "int", "Days ahead of the predicted event", min=0),
        Column("delivery_channel", "str", "Channel", enum="delivery_channel"),
        Column("delivery_status", "str", "Delivery outcome", enum="delivery_status"),
        Column("acceptance_status", "str", "HCP response", enum="acceptance_status"),
        _score("outcome_value", 1.0, "Measured value of the action, when known", nullable=True),
    ),
)

BUSINESS_METRICS = Table(
    name="business_metrics",
    description="Brand KPIs by region and date.",
    primary_key="metric_id",
    event_time="metric_date",
    natural_key=("metric_date", "metric_name", "brand", "region"),
    rules=(IsRatio("achievement_rate", "value", "target"),),
    columns=(
        _id("metric_id", r"^MET\d+$", "Metric identifier", unique=True),
        Column("metric_date", "datetime", "Date the metric refers to"),
        Column("metric_type", "str", "KPI family", enum="metric_type"),
        Column("metric_name", "str", "KPI name"),
        Column("brand", "str", "Brand", enum="brand"),
        Column("region", "str", "Region", enum="region"),
        Column("value", "float", "Observed value", min=0.0),
        Column("target", "float", "Target value (> 0)", min=1e-12),
        Column("achievement_rate", "float", "value / target", min=0.0),
    ),
)

CAUSAL_PATHS = Table(
    name="causal_paths",
    description="Causal relationships discovered between commercial and clinical drivers.",
    primary_key="path_id",
    event_time="discovery_date",
    rules=(Differ("start_node", "end_node"),),
    columns=(
        _id("path_id", r"^CP\d+$", "Path identifier", unique=True),
        Column("discovery_date", "datetime", "When the path was discovered"),
        Column("start_node", "str", "Cause"),
        Column("end_node", "str", "Effect (differs from the cause)"),
        Column("path_length", "int", "Edges on the path", min=1),
        Column("causal_effect_size", "float", "Standardised effect", min=-1.0, max=1.0),
        _score("confidence_level", 1.0, "Confidence in the path"),
        Column("method_used", "str", "Discovery method", enum="causal_method"),
        Column("validation_status", "str", "Validation outcome", enum="validation_status"),
    ),
)

AGENT_ACTIVITIES = Table(
    name="agent_activities",
    description="Work done by the platform's analytic agents.",
    primary_key="activity_id",
    event_time="activity_timestamp",
    columns=(
        _id("activity_id", r"^ACT\d+$", "Activity identifier", unique=True),
        Column("agent_name", "str", "Agent"),
        Column("agent_tier", "str", "Agent tier", enum="agent_tier"),
        Column("activity_timestamp", "datetime", "When the activity started"),
        Column("activity_type", "str", "Kind of work", enum="activity_type"),
        Column("processing_duration_ms", "float", "Duration in milliseconds", min=0.0),
        Column("records_processed", "int", "Records handled", min=0),
        Column("status", "str", "Outcome", enum="activity_status"),
    ),
)

ML_PREDICTIONS = Table(
    name="ml_predictions",
    description="Predictions produced by the platform's models.",
    primary_key="prediction_id",
    event_time="prediction_timestamp",
    produced=True,
    columns=(
        _id("prediction_id", r"^PRED\d+$", "Prediction identifier", unique=True),
        Column("model_version", "str", "Model version that produced it"),
        _id("patient_id", PATIENT_ID, "Patient scored"),
        Column("prediction_timestamp", "datetime", "When it was scored"),
        Column("prediction_type", "str", "Kind of prediction", enum="prediction_type"),
        _score("prediction_value", 1.0, "Score"),
        Column("prediction_class", "int", "Thresholded class", values=(0, 1)),
        _score("confidence_score", 1.0, "Confidence"),
    ),
)

TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        HCP_PROFILES,
        PATIENT_JOURNEYS,
        TREATMENT_EVENTS,
        TRIGGERS,
        BUSINESS_METRICS,
        CAUSAL_PATHS,
        AGENT_ACTIVITIES,
        ML_PREDICTIONS,
    )
}

INPUT_TABLES: tuple[str, ...] = tuple(name for name, t in TABLES.items() if not t.produced)

# Columns that encode the outcome the model predicts: never features.
LABEL_DERIVED: dict[str, tuple[str, ...]] = {
    "patient_journeys": ("journey_status", "journey_end_date"),
    "treatment_events": ("discontinuation_flag",),
}


def raw_asset_name(table: str) -> str:
    return f"raw_{table}"


def table(name: str) -> Table:
    try:
        return TABLES[name]
    except KeyError:
        raise KeyError(f"unknown table {name!r}; the contract has {sorted(TABLES)}") from None


def _check_integrity() -> None:
    """Fail at import if the contract contradicts itself (cheap, pure Python)."""
    for t in TABLES.values():
        names = t.column_names
        if len(set(names)) != len(names):
            raise ValueError(f"{t.name}: duplicate column names")
        referenced = {t.primary_key, t.event_time, *t.natural_key}
        referenced |= {t.loaded_at} if t.loaded_at else set()
        referenced |= {fk.column for fk in t.foreign_keys}
        referenced |= {c for r in t.rules for c in r.columns}
        if missing := referenced - set(names):
            raise ValueError(f"{t.name}: rules name unknown columns {sorted(missing)}")
        for c in t.columns:
            if c.enum and c.enum not in ENUMS:
                raise ValueError(f"{t.name}.{c.name}: unknown enum {c.enum!r}")
            if c.future_ok and c.dtype != "datetime":
                raise ValueError(f"{t.name}.{c.name}: future_ok applies to datetime columns")
            if not c.finite and c.dtype != "float":
                raise ValueError(f"{t.name}.{c.name}: finite=False applies to float columns")
        for fk in t.foreign_keys:
            parent = TABLES[fk.table].column_names
            bad = fk.ref_column not in parent or (
                fk.not_before is not None
                and (fk.not_before[0] not in names or fk.not_before[1] not in parent)
            )
            if bad:
                raise ValueError(f"{t.name}.{fk.column}: bad reference {fk}")


_check_integrity()
