"""The Pandera gate: validate a frame against its contract model, lazily, as evidence.

Used by every `schema` check (raw tables now, produced tables later). The
failure cases are summarised into counts per check and column, missing and
extra columns, the number of failing rows and a sample of at most 20 cases (every
problem's first case first). The summary line names the most frequent problems (column: check (count)).

Given the run time (`now`, naive UTC) and a tolerance, datetime columns of past
events must not lie beyond now + tolerance; values that cannot be typed without
change and non-finite floats always fail (see `contract.pandera_models`).
"""

from __future__ import annotations

import datetime as dt
import warnings

import dagster as dg

from e2i_platform.contract import table as contract_table
from e2i_platform.lib.gate_results import SAMPLE_LIMIT, gate_result

# Pandera names table-level structure failures with these checks.
_MISSING_COLUMN = "column_in_dataframe"
_EXTRA_COLUMN = "column_in_schema"
# How many problems the summary line names before "and N more".
SUMMARY_PROBLEMS = 5


def summarize_failures(table: str, failure_cases) -> dict:
    """Counts per (column, check), missing/extra columns, failing rows, sample."""
    import pandas as pd

    fc = failure_cases.copy()
    spec = contract_table(table)
    rules = {r.name: r for r in spec.rules}
    missing = sorted(fc.loc[fc["check"] == _MISSING_COLUMN, "failure_case"].astype(str))
    extra = sorted(fc.loc[fc["check"] == _EXTRA_COLUMN, "failure_case"].astype(str))
    rows = fc[~fc["check"].isin([_MISSING_COLUMN, _EXTRA_COLUMN])].copy()
    # A row rule reports every column of a failing row; keep one case per row,
    # attributed to the columns the rule is about.
    is_rule = rows["check"].isin(list(rules))
    rule_rows = rows[is_rule].drop_duplicates(["check", "index"]).copy()
    rule_rows["column"] = rule_rows["check"].map(lambda c: ",".join(rules[c].columns))
    rows = pd.concat([rows[~is_rule], rule_rows], ignore_index=True) if len(rule_rows) else rows

    counts = rows.groupby(["column", "check"], sort=False).size()
    failure_counts = {f"{col}: {check}": int(n) for (col, check), n in counts.items()}
    for col in missing:
        failure_counts[f"{col}: missing column"] = 1
    for col in extra:
        failure_counts[f"{col}: unexpected column"] = 1
    failing_rows = int(rows["index"].dropna().nunique())
    # The sample shows every problem before a second case of any: the first case of
    # each (column, check), then the second of each, and so on.
    rank = rows.groupby(["column", "check"], sort=False).cumcount()
    rows = rows.iloc[rank.to_numpy().argsort(kind="stable")]
    sample = [
        {
            "column": str(r.column),
            "check": str(r.check),
            "failure_case": str(r.failure_case),
            "row": None if r.index is None or r.index != r.index else int(r.index),
        }
        for r in rows.head(SAMPLE_LIMIT).itertuples(index=False)
    ]
    return {
        "failure_counts": failure_counts,
        "missing_columns": missing,
        "extra_columns": extra,
        "failing_rows": failing_rows,
        "sample": sample,
    }


def describe_problems(failure_counts: dict[str, int], limit: int = SUMMARY_PROBLEMS) -> str:
    """'col: check (n); ...' for the most frequent row-level problems, then 'and N more'."""
    structural = (": missing column", ": unexpected column")
    rows = [(k, n) for k, n in failure_counts.items() if not k.endswith(structural)]
    rows.sort(key=lambda kv: -kv[1])  # stable: ties keep the order Pandera found them
    text = "; ".join(f"{k} ({n})" for k, n in rows[:limit])
    if len(rows) > limit:
        text += f"; and {len(rows) - limit} more"
    return text


def schema_gate(
    table: str,
    df,
    asset_label: str,
    now: dt.datetime | None = None,
    future_tolerance: dt.timedelta | None = None,
) -> dg.AssetCheckResult:
    """Validate `df` lazily with the table's Pandera model and report as a blocking gate.

    `now` and `future_tolerance` are passed to `validate`: without `now` the
    not-in-the-future rule is not applied.
    """
    import pandera.pandas as pa

    from e2i_platform.contract.pandera_models import validate

    try:
        with warnings.catch_warnings():
            # pandera's failure-case concat trips a pandas FutureWarning; noise only.
            warnings.simplefilter("ignore", FutureWarning)
            validate(table, df, now=now, future_tolerance=future_tolerance)
    except pa.errors.SchemaErrors as exc:
        found = summarize_failures(table, exc.failure_cases)
        problems = len(found["failure_counts"])
        parts = [describe_problems(found["failure_counts"])]
        if found["missing_columns"]:
            parts.append(f"missing columns {found['missing_columns']}")
        if found["extra_columns"]:
            parts.append(f"unexpected columns {found['extra_columns']}")
        return gate_result(
            passed=False,
            blocking_failure=True,
            summary=(
                f"{asset_label}: {found['failing_rows']} of {len(df)} rows fail the "
                f"{table} contract ({problems} distinct problem{'s' if problems != 1 else ''}: "
                + "; ".join(p for p in parts if p)
                + ")"
            ),
            rows_checked=len(df),
            failing_rows=found["failing_rows"],
            failure_counts=found["failure_counts"],
            sample=found["sample"],
            extra={
                "missing_columns": found["missing_columns"],
                "extra_columns": found["extra_columns"],
            },
        )
    return gate_result(
        passed=True,
        blocking_failure=True,
        summary=f"{asset_label}: all {len(df)} rows satisfy the {table} contract",
        rows_checked=len(df),
    )
