"""Gates on the validated tables: `expectations` (GE) and `references_resolve`."""

from datetime import UTC, datetime, timedelta

import dagster as dg

from e2i_platform.contract import INPUT_TABLES
from e2i_platform.contract import table as contract_table
from e2i_platform.lib.gate_checks import gate_check
from e2i_platform.lib.gate_results import SAMPLE_LIMIT, gate_result
from e2i_platform.resources.config import ConfigResource


def expectations_gate(table: str, df, rules, now: datetime) -> dg.AssetCheckResult:
    from e2i_platform.quality.expectations import run_suite, suite_specs

    outcomes = run_suite(table, df, suite_specs(table, rules, now))
    failed = [o for o in outcomes if not o.success]
    critical = [o for o in failed if o.spec.severity == "critical"]
    if not failed:
        summary = f"{table}: all {len(outcomes)} expectations met on {len(df)} rows"
    else:
        summary = (
            f"{table}: {len(failed)} of {len(outcomes)} expectations failed "
            f"({len(critical)} critical, {len(failed) - len(critical)} warning): "
            + ", ".join(o.spec.id for o in failed)
        )
    return gate_result(
        passed=not failed,
        blocking_failure=bool(critical),
        summary=summary,
        rows_checked=len(df),
        failing_rows=max((o.unexpected_count or 0 for o in failed), default=0),
        failure_counts={o.spec.id: int(o.unexpected_count or 1) for o in failed},
        sample=[o.as_row() for o in failed],
        extra={
            "expectations_evaluated": len(outcomes),
            "failed_expectations": [o.as_row() for o in failed],
            "evaluated_at": now.isoformat(timespec="seconds"),
            **_recency_expiry(table, df, rules),
        },
    )


def _recency_expiry(table: str, df, rules) -> dict:
    """A critical recency expectation holds until the newest event is too old: the
    verdict expires then (epoch seconds), even if no data change."""
    from e2i_platform.lib.verdicts import EXPIRES_AT

    newest = df[contract_table(table).event_time].max() if len(df) else None
    if rules.recency.severity != "critical" or newest is None or newest != newest:
        return {}
    until = newest + timedelta(days=rules.recency.max_source_age_days)
    return {EXPIRES_AT: dg.MetadataValue.timestamp(until.replace(tzinfo=UTC).timestamp())}


def expectations_check(table: str) -> dg.AssetChecksDefinition:
    @gate_check(
        asset=table,
        name="expectations",
        description=(
            f"Great Expectations suite of `{table}` from the contract and config/quality.yaml: "
            "row count, null fractions, enum shares, natural-key uniqueness, distributions and "
            "recency. A failed critical expectation is ERROR (blocks); a failed warning-level "
            "one is WARN (shown, does not block)."
        ),
    )
    def expectations(validated, e2i_config: ConfigResource) -> dg.AssetCheckResult:
        rules = e2i_config.settings().quality.tables[table]
        return expectations_gate(table, validated, rules, datetime.now(UTC).replace(tzinfo=None))

    return expectations


def references_gate(table: str, child, parent) -> dg.AssetCheckResult:
    """Every foreign key resolves, and child times do not precede parent times."""
    (fk,) = contract_table(table).foreign_keys
    orphan = ~child[fk.column].isin(parent[fk.ref_column])
    counts = {f"{fk.column} not in {fk.table}.{fk.ref_column}": int(orphan.sum())}
    sample = [
        {"row": int(i), fk.column: str(v), "problem": f"no such {fk.table}.{fk.ref_column}"}
        for i, v in child.loc[orphan, fk.column].head(SAMPLE_LIMIT).items()
    ]
    bad = orphan.copy()
    if fk.not_before is not None:
        child_col, parent_col = fk.not_before
        parent_time = child[fk.column].map(parent.set_index(fk.ref_column)[parent_col])
        early = parent_time.notna() & (child[child_col] < parent_time)
        counts[f"{child_col} < {fk.table}.{parent_col}"] = int(early.sum())
        sample += [
            {
                "row": int(i),
                fk.column: str(child.at[i, fk.column]),
                child_col: str(child.at[i, child_col]),
                parent_col: str(parent_time.at[i]),
                "problem": f"{child_col} before the {fk.table} {parent_col}",
            }
            for i in child.index[early][:SAMPLE_LIMIT]
        ]
        bad |= early
    failing = int(bad.sum())
    counts = {k: v for k, v in counts.items() if v}
    return gate_result(
        passed=failing == 0,
        blocking_failure=True,
        summary=(
            f"{table}: all {len(child)} rows resolve to {fk.table}"
            if failing == 0
            else f"{table}: {failing} of {len(child)} rows break references to {fk.table}: "
            + "; ".join(f"{k} ({v})" for k, v in counts.items())
        ),
        rows_checked=len(child),
        failing_rows=failing,
        failure_counts=counts,
        sample=sample[:SAMPLE_LIMIT],
    )


def references_check(table: str) -> dg.AssetChecksDefinition:
    (fk,) = contract_table(table).foreign_keys  # one reference per table in the contract

    @gate_check(
        asset=table,
        name="references_resolve",
        additional_ins={"parent": dg.AssetIn(fk.table)},
        description=(
            f"Every `{table}.{fk.column}` exists in `{fk.table}.{fk.ref_column}`"
            + (
                f", and `{fk.not_before[0]}` is not before the {fk.table} `{fk.not_before[1]}`"
                if fk.not_before
                else ""
            )
            + ". Reports orphan counts and samples; ERROR blocks downstream."
        ),
    )
    def references_resolve(child, parent) -> dg.AssetCheckResult:
        return references_gate(table, child, parent)

    return references_resolve


def quality_checks() -> list[dg.AssetChecksDefinition]:
    checks = [expectations_check(t) for t in INPUT_TABLES]
    checks += [references_check(t) for t in INPUT_TABLES if contract_table(t).foreign_keys]
    return checks
