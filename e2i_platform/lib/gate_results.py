"""Turn gate evidence into an `AssetCheckResult` with the same metadata everywhere.

Every gate reports: whether it passed, the rows checked, the failing rows, counts
per failing rule, a bounded sample of failures, and where relevant the observed
value against its threshold. Pandera, Great Expectations and the referential
gate all pass through `gate_result`, so the UI reads the same way for each.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg

SAMPLE_LIMIT = 20


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _metadata_value(value: Any) -> dg.MetadataValue:
    if isinstance(value, dg.MetadataValue):
        return value
    if isinstance(value, bool):
        return dg.MetadataValue.bool(value)
    if isinstance(value, int):
        return dg.MetadataValue.int(value)
    if isinstance(value, float):
        return dg.MetadataValue.float(value)
    if isinstance(value, str):
        return dg.MetadataValue.text(value)
    return dg.MetadataValue.json(_jsonable(value))


def gate_result(
    *,
    passed: bool,
    blocking_failure: bool,
    summary: str,
    rows_checked: int,
    failing_rows: int = 0,
    failure_counts: Mapping[str, int] | None = None,
    sample: Sequence[Mapping[str, Any]] = (),
    extra: Mapping[str, Any] | None = None,
) -> dg.AssetCheckResult:
    """Build the check result.

    `passed` is false whenever anything failed; `blocking_failure` decides the
    severity: ERROR (blocks downstream) when a blocking rule failed, WARN otherwise.
    """
    warn_only = not passed and not blocking_failure
    severity = dg.AssetCheckSeverity.WARN if warn_only else dg.AssetCheckSeverity.ERROR
    metadata: dict[str, Any] = {
        "summary": dg.MetadataValue.text(summary),
        "rows_checked": dg.MetadataValue.int(int(rows_checked)),
        "failing_rows": dg.MetadataValue.int(int(failing_rows)),
        "severity_applied": dg.MetadataValue.text("none" if passed else severity.value),
    }
    if failure_counts:
        metadata["failure_counts"] = dg.MetadataValue.json(
            _jsonable(dict(sorted(failure_counts.items(), key=lambda kv: -kv[1])))
        )
    if sample:
        metadata["failure_sample"] = dg.MetadataValue.json(_jsonable(list(sample[:SAMPLE_LIMIT])))
    for key, value in (extra or {}).items():
        metadata[key] = _metadata_value(value)
    return dg.AssetCheckResult(
        passed=passed, severity=severity, metadata=metadata, description=summary
    )
