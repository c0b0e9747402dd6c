"""Promotion gates on `model_evaluation` (one blocking check each, thresholds in
config/promotion.yaml) and the `schema` gate on `patient_risk_scores`.

Each gate reports what it observed and the threshold it compared with; a gate that
cannot measure (no comparable region, a cost not found in the event log, say) fails:
unmeasured is never a pass. Each gate's verdict is also tagged on the evaluated model's
registered MLflow version (`e2i.gate.<gate>`: `passed` or `failed: <summary>`).
"""

# No `from __future__ import annotations`: Dagster reads the checks' resource annotations
# through `gate_check`'s wrapper, whose globals are not this module's.
import dagster as dg

from e2i_platform.lib.gate_checks import gate_check
from e2i_platform.lib.gate_results import gate_result
from e2i_platform.resources.config import ConfigResource
from e2i_platform.resources.mlflow import MlflowResource


def _on_version(
    mlflow: MlflowResource, evaluation: dict, gate: str, result: dg.AssetCheckResult
) -> dg.AssetCheckResult:
    """The verdict also on the evaluated model's registered version (`e2i.gate.<gate>`),
    so the registry shows why a `challenger` did not become champion."""
    from e2i_platform.resources.mlflow_registry import gate_tag

    version = mlflow.own_version(evaluation.get("model", {}).get("mlflow", {}))
    if version is not None:
        key, value = gate_tag(gate, result.passed, result.description)
        mlflow.set_version_tags(version, {key: value})
    return result


def _result(passed: bool, summary: str, evaluation: dict, **extra) -> dg.AssetCheckResult:
    return gate_result(
        passed=passed,
        blocking_failure=True,
        summary=summary,
        rows_checked=evaluation["test_rows"],
        extra=extra,
    )


def quality_verdict(evaluation: dict, min_auc: float, tolerance: float) -> dg.AssetCheckResult:
    auc = evaluation["roc_auc"]
    champion = evaluation["champion"]
    floor, why = min_auc, f"ROC-AUC {auc:.4f} vs minimum {min_auc:.4f}"
    if champion.get("exists") and not champion.get("same_model"):
        reference = champion.get("roc_auc_same_test", champion.get("recorded_roc_auc"))
        bar = reference - tolerance
        floor = max(min_auc, bar)
        how = (
            "same test rows" if champion.get("comparable") else "its recorded test (not comparable)"
        )
        why += f"; champion {champion['release_id']} {reference:.4f} on {how} - {tolerance} = {bar:.4f}"
    passed = auc >= floor
    return _result(
        passed,
        ("quality ok: " if passed else "quality below bar: ") + why,
        evaluation,
        observed_roc_auc=auc,
        threshold_roc_auc=round(floor, 6),
        min_roc_auc=min_auc,
        champion=champion,
    )


@gate_check(
    asset="model_evaluation",
    description="ROC-AUC on test >= the "
    "configured minimum and >= the current champion's (same test rows) - tolerance.",
)
def quality_gate(
    model_evaluation: dict, e2i_config: ConfigResource, mlflow: MlflowResource
) -> dg.AssetCheckResult:
    cfg = e2i_config.settings().promotion.quality_gate
    result = quality_verdict(model_evaluation, cfg.min_roc_auc, cfg.champion_tolerance)
    return _on_version(mlflow, model_evaluation, "quality_gate", result)


@gate_check(
    asset="model_evaluation",
    description="Brier score on test <= the configured maximum.",
)
def calibration_gate(
    model_evaluation: dict, e2i_config: ConfigResource, mlflow: MlflowResource
) -> dg.AssetCheckResult:
    limit = e2i_config.settings().promotion.calibration_gate.max_brier
    brier = model_evaluation["brier"]
    passed = brier <= limit
    result = _result(
        passed,
        f"Brier {brier:.4f} {'<=' if passed else '>'} maximum {limit:.4f}",
        model_evaluation,
        observed_brier=brier,
        threshold_max_brier=limit,
    )
    return _on_version(mlflow, model_evaluation, "calibration_gate", result)


@gate_check(
    asset="model_evaluation",
    description="p95 wall time to score one batch <= the configured maximum.",
)
def latency_gate(
    model_evaluation: dict, e2i_config: ConfigResource, mlflow: MlflowResource
) -> dg.AssetCheckResult:
    limit = e2i_config.settings().promotion.latency_gate.max_p95_ms
    latency = model_evaluation["latency"]
    passed = latency["p95_ms"] <= limit
    result = _result(
        passed,
        f"p95 {latency['p95_ms']:.1f} ms per {latency['batch_rows']} rows "
        f"{'<=' if passed else '>'} maximum {limit:g} ms",
        model_evaluation,
        observed_p95_ms=latency["p95_ms"],
        threshold_max_p95_ms=limit,
        latency=latency,
    )
    return _on_version(mlflow, model_evaluation, "latency_gate", result)


@gate_check(
    asset="model_evaluation",
    description="Largest ROC-AUC gap between regions <= the configured limit.",
)
def fairness_gate(
    model_evaluation: dict, e2i_config: ConfigResource, mlflow: MlflowResource
) -> dg.AssetCheckResult:
    limit = e2i_config.settings().promotion.fairness_gate.max_region_auc_gap
    gap = model_evaluation["region_auc_gap"]
    regions = model_evaluation["region_auc"]
    compared = sorted(r for r, v in regions.items() if v["compared"])
    if gap is None:
        result = _result(
            False,
            f"fairness cannot be measured: {len(compared)} region(s) comparable "
            "(need 2; see region_auc for why)",
            model_evaluation,
            observed_gap=None,
            threshold_max_gap=limit,
            region_auc=regions,
        )
        return _on_version(mlflow, model_evaluation, "fairness_gate", result)
    passed = gap <= limit
    result = _result(
        passed,
        f"largest regional ROC-AUC gap {gap:.4f} {'<=' if passed else '>'} limit {limit:.4f} "
        f"over {', '.join(compared)}",
        model_evaluation,
        observed_gap=gap,
        threshold_max_gap=limit,
        region_auc=regions,
    )
    return _on_version(mlflow, model_evaluation, "fairness_gate", result)


def cost_verdict(evaluation: dict, limits) -> dg.AssetCheckResult:
    """What the model cost to produce, its size on disk and its scoring cost per 1M rows
    (one core), each against its limit; one not measured fails the gate."""
    cost = evaluation.get("cost") or {}
    production = cost.get("production") or {"measured": False, "why": "not in the evaluation"}
    size = cost.get("model_size") or {"measured": False, "why": "not in the evaluation"}
    scoring = cost.get("scoring") or {}
    measures = {
        "production_seconds": (
            production.get("seconds") if production.get("measured") else None,
            limits.max_production_seconds,
            production.get("why"),
            "s to produce (HPO + training)",
        ),
        "model_mb": (
            size.get("mb") if size.get("measured") else None,
            limits.max_model_mb,
            size.get("why"),
            "MiB on disk",
        ),
        "scoring_cpu_seconds_per_million": (
            scoring.get("cpu_seconds"),
            limits.max_scoring_cpu_seconds_per_million,
            "scoring cost not in the evaluation (evaluated before the cost gate existed)",
            "CPU-s per 1M rows on one core",
        ),
    }
    problems, observed = [], []
    for name, (value, limit, why, unit) in measures.items():
        if value is None:
            problems.append(f"{name} cannot be measured: {why}")
        elif value > limit:
            problems.append(f"{name} {value:g} > limit {limit:g} {unit}")
        else:
            observed.append(f"{name} {value:g} <= {limit:g}")
    passed = not problems
    summary = (
        "cost ok: " + "; ".join(observed)
        if passed
        else "cost not within its limits: " + "; ".join(problems)
    )
    extra = {}
    for name, (value, limit, _, _) in measures.items():
        extra[f"observed_{name}"] = value
        extra[f"threshold_max_{name}"] = limit
    return _result(passed, summary, evaluation, **extra, cost=cost)


@gate_check(
    asset="model_evaluation",
    description="What the model cost to produce (HPO + training step seconds), its size "
    "on disk and its scoring CPU seconds per 1M rows on one core <= the configured limits.",
)
def cost_gate(
    model_evaluation: dict, e2i_config: ConfigResource, mlflow: MlflowResource
) -> dg.AssetCheckResult:
    result = cost_verdict(model_evaluation, e2i_config.settings().promotion.cost_gate)
    return _on_version(mlflow, model_evaluation, "cost_gate", result)


@gate_check(
    asset="patient_risk_scores",
    name="schema",
    description="Pandera contract of `ml_predictions` on the batch scores.",
)
def risk_scores_schema(patient_risk_scores, e2i_config: ConfigResource) -> dg.AssetCheckResult:
    from datetime import UTC, datetime, timedelta

    from e2i_platform.lib.schema_gate import schema_gate

    tolerance = e2i_config.settings().quality.future_tolerance_minutes
    return schema_gate(
        "ml_predictions",
        patient_risk_scores,
        "patient_risk_scores",
        now=datetime.now(UTC).replace(tzinfo=None),
        future_tolerance=timedelta(minutes=tolerance),
    )


def promotion_checks() -> list[dg.AssetChecksDefinition]:
    return [
        quality_gate,
        calibration_gate,
        latency_gate,
        fairness_gate,
        cost_gate,
        risk_scores_schema,
    ]
