"""Great Expectations suites built from the contract and config/quality.yaml.

The contract says *what* a table is (columns, enums, natural key, event time);
quality.yaml says *how strict* to be (ranges, `mostly`, severities). Each
expectation carries an id and a severity in its `meta`, so a result maps back
to the rule that produced it. Great Expectations is imported only when a suite
runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from e2i_platform.contract import TABLES
from e2i_platform.settings.models import TableQuality


@dataclass(frozen=True)
class ExpectationSpec:
    id: str
    type: str  # the GE expectation class name
    kwargs: dict[str, Any]
    severity: str
    threshold: str  # what was required, for people


@dataclass(frozen=True)
class ExpectationOutcome:
    spec: ExpectationSpec
    success: bool
    observed: Any
    unexpected_count: int | None
    sample: list[Any]

    def as_row(self) -> dict[str, Any]:
        return {
            "id": self.spec.id,
            "severity": self.spec.severity,
            "observed": _plain(self.observed),
            "threshold": self.spec.threshold,
            "unexpected_count": self.unexpected_count,
            "sample": [_plain(v) for v in self.sample[:5]],
        }


def _plain(value: Any) -> Any:
    """JSON-friendly rendering of observed values (timestamps, numpy scalars)."""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def suite_specs(table: str, rules: TableQuality, now: datetime) -> list[ExpectationSpec]:
    """The expectations of one table, in a stable order."""
    spec = TABLES[table]
    out = [
        ExpectationSpec(
            "row_count",
            "ExpectTableRowCountToBeBetween",
            {"min_value": rules.row_count.min, "max_value": rules.row_count.max},
            rules.row_count.severity,
            f"{rules.row_count.min} <= rows <= {rules.row_count.max}",
        )
    ]
    for col, rule in rules.null_fraction.items():
        out.append(
            ExpectationSpec(
                f"null_fraction:{col}",
                "ExpectColumnValuesToNotBeNull",
                {"column": col, "mostly": round(1.0 - rule.max, 12)},
                rule.severity,
                f"null fraction <= {rule.max}",
            )
        )
    for col in spec.columns:
        if col.enum is None:
            continue
        out.append(
            ExpectationSpec(
                f"enum:{col.name}",
                "ExpectColumnValuesToBeInSet",
                {"column": col.name, "value_set": list(col.allowed), "mostly": rules.enums.mostly},
                rules.enums.severity,
                f"share in {col.enum} >= {rules.enums.mostly}",
            )
        )
    if spec.natural_key:
        out.append(
            ExpectationSpec(
                "compound_unique:" + "+".join(spec.natural_key),
                "ExpectCompoundColumnsToBeUnique",
                {"column_list": list(spec.natural_key)},
                rules.compound_unique.severity,
                f"({', '.join(spec.natural_key)}) unique",
            )
        )
    for col, rule in rules.distributions.items():
        if rule.mean is not None:
            out.append(
                ExpectationSpec(
                    f"mean:{col}",
                    "ExpectColumnMeanToBeBetween",
                    {"column": col, "min_value": rule.mean.min, "max_value": rule.mean.max},
                    rule.severity,
                    f"{rule.mean.min} <= mean <= {rule.mean.max}",
                )
            )
        if rule.quantiles:
            qs = sorted(rule.quantiles)
            out.append(
                ExpectationSpec(
                    f"quantiles:{col}",
                    "ExpectColumnQuantileValuesToBeBetween",
                    {
                        "column": col,
                        "quantile_ranges": {
                            "quantiles": qs,
                            "value_ranges": [
                                [rule.quantiles[q].min, rule.quantiles[q].max] for q in qs
                            ],
                        },
                    },
                    rule.severity,
                    ", ".join(
                        f"q{q:g} in [{rule.quantiles[q].min}, {rule.quantiles[q].max}]" for q in qs
                    ),
                )
            )
    oldest_allowed = now - timedelta(days=rules.recency.max_source_age_days)
    out.append(
        ExpectationSpec(
            f"recency:{spec.event_time}",
            "ExpectColumnMaxToBeBetween",
            {"column": spec.event_time, "min_value": oldest_allowed},
            rules.recency.severity,
            f"newest {spec.event_time} >= {oldest_allowed.isoformat(timespec='seconds')} "
            f"({rules.recency.max_source_age_days:g} days)",
        )
    )
    return out


def _columns_for_suite(table: str, df, specs: list[ExpectationSpec]):
    """The frame GE needs: only referenced columns, closed-set text as `category`.

    GE copies and hashes the batch and filters whole frames per expectation; fewer
    columns and categorical enums make that several times cheaper without changing
    a single value.
    """
    used: set[str] = set()
    for s in specs:
        used |= (
            {s.kwargs["column"]} if "column" in s.kwargs else set(s.kwargs.get("column_list", ()))
        )
    spec = TABLES[table]
    enums = {c.name for c in spec.columns if c.enum and c.name in used}
    frame = df[[c for c in spec.column_names if c in used]]
    return frame.astype(dict.fromkeys(enums, "category"))


def run_suite(table: str, df, specs: list[ExpectationSpec]) -> list[ExpectationOutcome]:
    """Validate `df` with a GE 1.x suite made of `specs`; one outcome per spec."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    # GE logs every validation at INFO; our check metadata already carries the result.
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    asset = context.data_sources.add_pandas(f"{table}_source").add_dataframe_asset(table)
    batch = asset.add_batch_definition_whole_dataframe(f"{table}_batch")
    suite = context.suites.add(gx.ExpectationSuite(name=f"{table}_suite"))
    for s in specs:
        expectation_class = getattr(gx.expectations, s.type)
        suite.add_expectation(
            expectation_class(**s.kwargs, meta={"id": s.id, "severity": s.severity})
        )
    # Validate the batch directly: ValidationDefinition.run also stores the result as JSON,
    # which fails on the numpy booleans of the quantile expectation's details (GE 1.24).
    frame = _columns_for_suite(table, df, specs)
    result = batch.get_batch(batch_parameters={"dataframe": frame}).validate(
        suite, result_format={"result_format": "SUMMARY"}
    )
    by_id = {s.id: s for s in specs}
    outcomes = []
    for r in result.results:
        if r.exception_info and r.exception_info.get("raised_exception"):
            # An expectation that could not run is a failure with the reason as evidence.
            spec = by_id[r.expectation_config.meta["id"]]
            outcomes.append(
                ExpectationOutcome(
                    spec, False, f"error: {r.exception_info.get('exception_message')}", None, []
                )
            )
            continue
        spec = by_id[r.expectation_config.meta["id"]]
        res = r.result or {}
        observed = res.get("observed_value")
        if observed is None and res.get("unexpected_percent") is not None:
            observed = {"unexpected_fraction": round(res["unexpected_percent"] / 100.0, 6)}
        outcomes.append(
            ExpectationOutcome(
                spec=spec,
                success=bool(r.success),
                observed=observed,
                unexpected_count=res.get("unexpected_count"),
                sample=list(res.get("partial_unexpected_list") or []),
            )
        )
    missing = set(by_id) - {o.spec.id for o in outcomes}
    if missing:
        raise RuntimeError(f"{table}: Great Expectations returned no result for {sorted(missing)}")
    return outcomes
