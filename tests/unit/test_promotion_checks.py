"""Promotion gates on model_evaluation: every threshold of config/promotion.yaml passes
at exactly its limit and fails just beyond it, as a blocking ERROR with the observed
value and the threshold as evidence; a gate that cannot measure fails."""

import dagster as dg
import pytest

from e2i_platform.promotion.checks import (
    calibration_gate,
    cost_gate,
    cost_verdict,
    fairness_gate,
    latency_gate,
    promotion_checks,
    quality_gate,
    quality_verdict,
    risk_scores_schema,
)
from e2i_platform.resources.mlflow import MlflowResource

GATES = {
    "quality_gate": ("model_evaluation", "configured minimum"),
    "calibration_gate": ("model_evaluation", "Brier score on test <= the configured maximum"),
    "latency_gate": ("model_evaluation", "p95 wall time to score one batch"),
    "fairness_gate": ("model_evaluation", "Largest ROC-AUC gap between regions"),
    "cost_gate": ("model_evaluation", "What the model cost to produce"),
    "schema": ("patient_risk_scores", "Pandera contract of `ml_predictions`"),
}


def _meta(result, key: str):
    value = result.metadata[key]
    return getattr(value, "value", value)


# ---------------------------------------------------------------- the checks as defined


def test_every_promotion_gate_is_a_blocking_check_on_its_asset():
    checks = promotion_checks()
    assert checks == [
        quality_gate,
        calibration_gate,
        latency_gate,
        fairness_gate,
        cost_gate,
        risk_scores_schema,
    ]
    for check in checks:
        assert isinstance(check, dg.AssetChecksDefinition)
        (spec,) = check.check_specs
        asset, words = GATES[spec.name]
        assert spec.asset_key == dg.AssetKey(asset)
        assert spec.blocking is True, spec.name
        assert words in spec.description


# ---------------------------------------------------------------- quality (pure)


def _evaluation(roc_auc: float, champion: dict | None = None) -> dict:
    return {"roc_auc": roc_auc, "test_rows": 321, "champion": champion or {"exists": False}}


def test_quality_passes_at_the_minimum_and_fails_just_below():
    at = quality_verdict(_evaluation(0.65), min_auc=0.65, tolerance=0.02)
    assert at.passed is True
    assert at.description == "quality ok: ROC-AUC 0.6500 vs minimum 0.6500"
    assert _meta(at, "observed_roc_auc") == 0.65 and _meta(at, "threshold_roc_auc") == 0.65
    assert _meta(at, "min_roc_auc") == 0.65 and _meta(at, "rows_checked") == 321
    assert _meta(at, "champion") == {"exists": False}
    below = quality_verdict(_evaluation(0.6499), min_auc=0.65, tolerance=0.02)
    assert below.passed is False
    assert below.severity == dg.AssetCheckSeverity.ERROR
    assert _meta(below, "severity_applied") == "ERROR"
    assert below.description == "quality below bar: ROC-AUC 0.6499 vs minimum 0.6500"


def test_quality_against_a_comparable_champion_allows_the_tolerance_and_no_more():
    champion = {
        "exists": True,
        "same_model": False,
        "comparable": True,
        "release_id": "r-0007",
        "roc_auc_same_test": 0.8,
        "recorded_roc_auc": 0.95,  # its own old test: not what is compared
    }
    bar = 0.8 - 0.02
    at = quality_verdict(_evaluation(bar, champion), min_auc=0.65, tolerance=0.02)
    assert at.passed is True
    assert at.description == (
        f"quality ok: ROC-AUC {bar:.4f} vs minimum 0.6500; "
        "champion r-0007 0.8000 on same test rows - 0.02 = 0.7800"
    )
    assert _meta(at, "threshold_roc_auc") == 0.78
    below = quality_verdict(_evaluation(bar - 1e-4, champion), min_auc=0.65, tolerance=0.02)
    assert below.passed is False and below.severity == dg.AssetCheckSeverity.ERROR
    assert below.description.startswith("quality below bar: ROC-AUC 0.7799 vs minimum 0.6500; ")


def test_quality_against_a_champion_measured_on_its_own_test_says_so():
    champion = {
        "exists": True,
        "same_model": False,
        "comparable": False,
        "release_id": "r-0003",
        "recorded_roc_auc": 0.7,
    }
    verdict = quality_verdict(_evaluation(0.69, champion), min_auc=0.65, tolerance=0.02)
    assert verdict.passed is True
    assert "champion r-0003 0.7000 on its recorded test (not comparable) - 0.02 = 0.6800" in (
        verdict.description
    )
    assert _meta(verdict, "threshold_roc_auc") == 0.68


def test_the_minimum_holds_when_the_champion_bar_is_lower():
    champion = {
        "exists": True,
        "same_model": False,
        "comparable": True,
        "release_id": "r-1",
        "roc_auc_same_test": 0.6,
    }
    verdict = quality_verdict(_evaluation(0.64, champion), min_auc=0.65, tolerance=0.02)
    assert verdict.passed is False
    assert _meta(verdict, "threshold_roc_auc") == 0.65
    assert verdict.description.endswith("champion r-1 0.6000 on same test rows - 0.02 = 0.5800")


def test_the_threshold_is_reported_to_six_decimals():
    verdict = quality_verdict(_evaluation(0.7), min_auc=0.6543219, tolerance=0.02)
    assert _meta(verdict, "threshold_roc_auc") == 0.654322
    assert _meta(verdict, "min_roc_auc") == 0.6543219


@pytest.mark.parametrize(
    "champion",
    [
        {"exists": False},
        {"exists": True, "same_model": True, "release_id": "r-9", "roc_auc_same_test": 0.99},
    ],
)
def test_no_champion_or_the_champion_itself_is_judged_on_the_minimum_only(champion):
    verdict = quality_verdict(_evaluation(0.7, champion), min_auc=0.65, tolerance=0.02)
    assert verdict.passed is True
    assert verdict.description == "quality ok: ROC-AUC 0.7000 vs minimum 0.6500"
    assert _meta(verdict, "threshold_roc_auc") == 0.65


# ---------------------------------------------------------------- the gates, run by Dagster


def _model_evaluation(limits: dict, case: str) -> dict:
    """An evaluation record at, beyond or below every configured limit, or one whose
    regional gap could not be measured."""
    step = {"at": 0.0, "beyond": 1e-4, "below": -0.05}.get(case, 0.0)
    regions = {
        "midwest": {"rows": 12, "positives": 1, "compared": False, "why": "fewer than 30 rows"},
        "south": {"rows": 80, "positives": 9, "compared": True, "roc_auc": 0.8},
        "west": {"rows": 90, "positives": 11, "compared": True, "roc_auc": 0.7},
    }
    if case == "unmeasured":
        regions["west"] = {"rows": 90, "positives": 0, "compared": False, "why": "one class only"}
    return {
        "test_rows": 180,
        "roc_auc": limits["min_roc_auc"] - step,
        "champion": {"exists": False},
        "brier": limits["max_brier"] + step,
        "latency": {"p95_ms": limits["max_p95_ms"] + step * 1000, "batch_rows": 1000},
        "region_auc_gap": None if case == "unmeasured" else limits["max_gap"] + step,
        "region_auc": regions,
        "cost": _cost(limits, step, unmeasured=case == "unmeasured"),
    }


def _cost(limits: dict, step: float, unmeasured: bool = False) -> dict:
    """The cost section of an evaluation record, `step` beyond every cost limit."""
    production = {"measured": True, "seconds": limits["max_production_seconds"] + step}
    if unmeasured:
        production = {
            "measured": False,
            "why": "no trained_model step that trained models/m/v1 in this instance",
        }
    return {
        "production": production,
        "model_size": {"measured": True, "mb": limits["max_model_mb"] + step, "bytes": 1},
        "scoring": {
            "cpu_seconds": limits["max_scoring_cpu_seconds_per_million"] + step,
            "wall_seconds": 1.0,
            "threads": 1,
            "batch_rows": 1000,
            "repeats": 30,
        },
    }


TRACKING_OFF = MlflowResource(
    enabled=False, tracking_uri="sqlite:///unused.db", experiment="e", registered_model="m"
)


class Case(dg.Config):
    case: str
    limits: dict


@dg.asset(name="model_evaluation")
def standin_model_evaluation(config: Case) -> dict:
    return _model_evaluation(config.limits, config.case)


@pytest.fixture(scope="module")
def gate_runs(tmp_path_factory):
    """Runs the four gates on a stand-in evaluation of a given case, with the configured
    limits: `gate_runs(case)` -> {gate: evaluation}. Each test makes its own run, so a
    gate's code runs inside the test that judges it."""
    from e2i_platform.resources.config import ConfigResource
    from e2i_platform.settings import load_settings
    from e2i_platform.settings.loader import REPO_ROOT

    with pytest.MonkeyPatch.context() as mp, dg.instance_for_test() as instance:
        mp.setenv("E2I_HOME", str(tmp_path_factory.mktemp("e2i")))
        for key in ("E2I_ENV", "E2I_CONFIG_DIR"):
            mp.delenv(key, raising=False)
        promotion = load_settings().promotion
        limits = {
            "min_roc_auc": promotion.quality_gate.min_roc_auc,
            "max_brier": promotion.calibration_gate.max_brier,
            "max_p95_ms": promotion.latency_gate.max_p95_ms,
            "max_gap": promotion.fairness_gate.max_region_auc_gap,
            **promotion.cost_gate.model_dump(),
        }
        config = ConfigResource(config_dir=str(REPO_ROOT / "config"), env="local")

        def gates(case: str) -> dict:
            result = dg.materialize(
                [standin_model_evaluation, *promotion_checks()[:5]],
                selection=dg.AssetSelection.assets("model_evaluation"),
                # Tracking off: the stand-in evaluation has no registered version to tag
                # (test_mlflow_registry tags a real one).
                resources={"e2i_config": config, "mlflow": TRACKING_OFF},
                instance=instance,
                run_config={
                    "ops": {"model_evaluation": {"config": {"case": case, "limits": limits}}}
                },
                raise_on_error=False,
            )
            return {e.check_name: e for e in result.get_asset_check_evaluations()}

        gates.limits = limits
        yield gates


def test_every_gate_passes_at_exactly_its_limit(gate_runs):
    limits, at = gate_runs.limits, gate_runs("at")
    assert {name: e.passed for name, e in at.items()} == {
        "quality_gate": True,
        "calibration_gate": True,
        "latency_gate": True,
        "fairness_gate": True,
        "cost_gate": True,
    }
    assert at["calibration_gate"].description == (
        f"Brier {limits['max_brier']:.4f} <= maximum {limits['max_brier']:.4f}"
    )
    assert _meta(at["calibration_gate"], "observed_brier") == limits["max_brier"]
    assert _meta(at["calibration_gate"], "threshold_max_brier") == limits["max_brier"]
    assert at["latency_gate"].description == (
        f"p95 {limits['max_p95_ms']:.1f} ms per 1000 rows <= maximum {limits['max_p95_ms']:g} ms"
    )
    assert _meta(at["latency_gate"], "observed_p95_ms") == limits["max_p95_ms"]
    assert _meta(at["latency_gate"], "threshold_max_p95_ms") == limits["max_p95_ms"]
    assert _meta(at["latency_gate"], "latency") == {
        "p95_ms": limits["max_p95_ms"],
        "batch_rows": 1000,
    }
    gap = limits["max_gap"]
    assert at["fairness_gate"].description == (
        f"largest regional ROC-AUC gap {gap:.4f} <= limit {gap:.4f} over south, west"
    )
    assert _meta(at["fairness_gate"], "observed_gap") == gap
    assert _meta(at["fairness_gate"], "threshold_max_gap") == gap
    assert _meta(at["fairness_gate"], "region_auc")["midwest"]["why"] == "fewer than 30 rows"
    for name in COST_MEASURES:
        assert _meta(at["cost_gate"], f"observed_{name}") == limits[f"max_{name}"]
        assert _meta(at["cost_gate"], f"threshold_max_{name}") == limits[f"max_{name}"]
    assert at["cost_gate"].description.startswith("cost ok: production_seconds ")
    for evaluation in at.values():
        assert _meta(evaluation, "rows_checked") == 180
        assert _meta(evaluation, "severity_applied") == "none"


def test_every_gate_fails_just_beyond_its_limit_as_a_blocking_error(gate_runs):
    limits, beyond = gate_runs.limits, gate_runs("beyond")
    assert set(beyond) == {
        "quality_gate",
        "calibration_gate",
        "latency_gate",
        "fairness_gate",
        "cost_gate",
    }
    for name, evaluation in beyond.items():
        assert evaluation.passed is False, name
        assert evaluation.severity == dg.AssetCheckSeverity.ERROR, name
        assert _meta(evaluation, "severity_applied") == "ERROR"
    brier = limits["max_brier"] + 1e-4
    assert beyond["calibration_gate"].description == (
        f"Brier {brier:.4f} > maximum {limits['max_brier']:.4f}"
    )
    assert beyond["latency_gate"].description == (
        f"p95 {limits['max_p95_ms'] + 0.1:.1f} ms per 1000 rows > maximum "
        f"{limits['max_p95_ms']:g} ms"
    )
    assert beyond["fairness_gate"].description.startswith(
        f"largest regional ROC-AUC gap {limits['max_gap'] + 1e-4:.4f} > limit "
    )
    assert beyond["quality_gate"].description.startswith("quality below bar: ")
    cost = beyond["cost_gate"].description
    assert cost.startswith("cost not within its limits: production_seconds ")
    for name in COST_MEASURES:
        assert f"{name} {limits[f'max_{name}'] + 1e-4:g} > limit {limits[f'max_{name}']:g}" in cost


def test_every_gate_passes_below_its_limit(gate_runs):
    below = gate_runs("below")
    assert all(e.passed for e in below.values()), {n: e.description for n, e in below.items()}
    assert " <= " in below["fairness_gate"].description


def test_an_unmeasurable_regional_gap_fails_fairness(gate_runs):
    evaluation = gate_runs("unmeasured")["fairness_gate"]
    assert evaluation.passed is False
    assert evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert evaluation.description == (
        "fairness cannot be measured: 1 region(s) comparable (need 2; see region_auc for why)"
    )
    assert _meta(evaluation, "threshold_max_gap") == gate_runs.limits["max_gap"]
    assert _meta(evaluation, "region_auc")["west"]["why"] == "one class only"
    assert _meta(evaluation, "observed_gap") is None


def test_an_unmeasured_production_cost_fails_the_cost_gate(gate_runs):
    evaluation = gate_runs("unmeasured")["cost_gate"]
    assert evaluation.passed is False
    assert evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert evaluation.description.startswith(
        "cost not within its limits: production_seconds cannot be measured: no trained_model step "
        "that trained models/m/v1 in this instance"
    )
    assert _meta(evaluation, "observed_production_seconds") is None
    limit = gate_runs.limits["max_production_seconds"]
    assert _meta(evaluation, "threshold_max_production_seconds") == limit


# ---------------------------------------------------------------- cost (pure)

COST_MEASURES = ("production_seconds", "model_mb", "scoring_cpu_seconds_per_million")


class _Limits:
    max_production_seconds = 100.0
    max_model_mb = 2.0
    max_scoring_cpu_seconds_per_million = 10.0


def _limits() -> dict:
    return {f"max_{name}": getattr(_Limits, f"max_{name}") for name in COST_MEASURES}


@pytest.mark.parametrize("measure", COST_MEASURES)
def test_each_cost_fails_alone_just_beyond_its_limit(measure):
    evaluation = {"test_rows": 10, "cost": _cost(_limits(), 0.0)}
    at = cost_verdict(evaluation, _Limits)
    assert at.passed is True, at.description
    key = {
        "production_seconds": ("production", "seconds"),
        "model_mb": ("model_size", "mb"),
        "scoring_cpu_seconds_per_million": ("scoring", "cpu_seconds"),
    }[measure]
    evaluation["cost"][key[0]][key[1]] += 1e-3
    beyond = cost_verdict(evaluation, _Limits)
    assert beyond.passed is False and beyond.severity == dg.AssetCheckSeverity.ERROR
    limit = getattr(_Limits, f"max_{measure}")
    assert beyond.description.startswith(
        f"cost not within its limits: {measure} {limit + 1e-3:g} > limit {limit:g}"
    )
    assert _meta(beyond, f"observed_{measure}") == limit + 1e-3
    assert _meta(beyond, f"threshold_max_{measure}") == limit


def test_an_evaluation_without_cost_fails_the_cost_gate():
    verdict = cost_verdict({"test_rows": 10}, _Limits)
    assert verdict.passed is False
    assert "production_seconds cannot be measured: not in the evaluation" in verdict.description
    assert "model_mb cannot be measured: not in the evaluation" in verdict.description
    assert "scoring_cpu_seconds_per_million cannot be measured: scoring cost not in" in (
        verdict.description
    )
    assert all(_meta(verdict, f"observed_{name}") is None for name in COST_MEASURES)
