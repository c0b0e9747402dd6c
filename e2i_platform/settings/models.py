"""Typed shape of every YAML file in config/ (one model per file).

Every model forbids unknown keys: a typo in config is an error that names the
file and the key path, never a silently ignored setting.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from e2i_platform.contract import INPUT_TABLES, TABLES

Severity = Literal["critical", "warning"]
Fraction = Field(ge=0.0, le=1.0)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- config/platform.yaml ------------------------------------------------------


class ExecutorSettings(Strict):
    max_concurrent: int = Field(2, ge=1, le=64)


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


class PlatformSettings(Strict):
    home: str
    executor: ExecutorSettings = ExecutorSettings()
    generator: GeneratorSettings
    instance: InstanceSettings = InstanceSettings()
    ingest_schedule: str = "0 5 * * *"


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


CONFIG_FILES: dict[str, type[Strict]] = {
    "platform": PlatformSettings,
    "quality": QualitySettings,
}
