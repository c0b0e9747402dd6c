"""Promotion bound to its evidence, on a real instance, Optuna, MLflow and LightGBM: a
model the gates never judged is never promoted, thresholds are part of the verdict,
a rollback is recorded on the asset graph and sticks, and a vanished model file is
never reported up to date.

300 patients cannot judge a model, so the promotion thresholds are relaxed (the gates
themselves are judged at 5,000 patients in test_model_lifecycle); this test is about
what the verdicts are bound to.
"""

import json
import shutil
from pathlib import Path

from e2i_platform.ops.reuse import plan_run
from e2i_platform.settings import load_settings

from support import (
    current_release,
    definitions,
    edit_yaml,
    evaluations,
    failed_steps,
    latest_metadata,
    materialized,
    roll_back,
    run,
)


def _trained(home: Path) -> dict:
    return json.loads((home / "warehouse" / "trained_model.json").read_text())


def _refusal(result) -> str:
    assert not result.success
    return " ".join(failed_steps(result).values())


def _plan(defs, instance, settings) -> dict:
    return {d.asset: d for d in plan_run(defs, instance, defs.resources["source"], settings)}


def _override(reason: str) -> dict:
    return {"ops": {"champion_model": {"config": {"override_rollback": True, "reason": reason}}}}


def test_promotion_is_bound_to_its_evidence_and_a_rollback_sticks(e2i_home, instance, config_copy):
    edit_yaml(config_copy, "promotion", ("quality_gate", "min_roc_auc"), 0.5)
    edit_yaml(config_copy, "promotion", ("quality_gate", "champion_tolerance"), 0.5)
    edit_yaml(config_copy, "promotion", ("fairness_gate", "max_region_auc_gap"), 1.0)
    defs = definitions(load_settings())
    first = run(defs, instance)
    assert first.success, failed_steps(first)
    release_a, model_a = current_release(e2i_home), _trained(e2i_home)

    # 1. A model model_evaluation never saw is not promoted on the old model's gates.
    # (Boosting on from the first model: another model, with no configuration changed.)
    more = {"ops": {"trained_model": {"config": {"run_mode": "continue_from_previous"}}}}
    assert run(defs, instance, selection=["trained_model"], run_config=more).success
    model_b = _trained(e2i_home)
    assert model_b["model_sha256"] != model_a["model_sha256"]
    message = _refusal(run(defs, instance, selection=["champion_model"]))
    assert f"model_evaluation evaluated model {model_a['model_sha256'][:12]}" in message
    assert f"the trained_model to promote is {model_b['model_sha256'][:12]}" in message
    assert current_release(e2i_home) == release_a

    # 2. Thresholds are part of the verdict: tightening one re-evaluates the gates.
    edit_yaml(config_copy, "promotion", ("quality_gate", "min_roc_auc"), 0.99)
    tight = load_settings()
    defs = definitions(tight)
    message = _refusal(run(defs, instance, selection=["champion_model"]))
    assert "gate quality_gate on model_evaluation: it was judged under configuration" in message
    assert _plan(defs, instance, tight)["model_evaluation"].run  # re-evaluated by make run
    edit_yaml(config_copy, "promotion", ("quality_gate", "min_roc_auc"), 0.5)
    defs = definitions(load_settings())

    # 3. Evaluated, B is promoted; the scores use it.
    promoted = run(defs, instance, selection=["model_evaluation", "champion_model"])
    assert promoted.success, failed_steps(promoted)
    release_b = current_release(e2i_home)
    assert release_b != release_a
    manifest_b = json.loads((e2i_home / "releases" / release_b / "manifest.json").read_text())
    assert manifest_b["evaluated_model_sha256"] == model_b["model_sha256"]
    assert manifest_b["gates"]["model_evaluation.quality_gate"]["holds"] is True
    assert run(defs, instance, selection=["patient_risk_scores"]).success
    assert latest_metadata(instance, "patient_risk_scores")["release_id"] == release_b

    # 4. A rollback is recorded on the asset graph, and sticks.
    assert roll_back(defs, instance, "drift in region").success
    rollback_id = current_release(e2i_home)
    champion = latest_metadata(instance, "champion_model")
    assert champion["kind"] == "rollback" and champion["release_id"] == rollback_id
    assert champion["restores_release"] == release_a
    published = json.loads((e2i_home / "warehouse" / "champion_model.json").read_text())
    assert published["release_id"] == rollback_id
    settings = load_settings()
    plan = _plan(defs, instance, settings)
    assert not plan["champion_model"].run, plan["champion_model"].reason  # the rollback is kept
    assert plan["patient_risk_scores"].run  # ...and the scores follow it
    assert run(defs, instance, selection=["patient_risk_scores"]).success
    scores = latest_metadata(instance, "patient_risk_scores")
    assert scores["release_id"] == rollback_id
    assert scores["model_version"] == model_a["mlflow"]["model_version"]

    # The evaluation compared B with release A, which is no longer current.
    message = _refusal(run(defs, instance, selection=["champion_model"]))
    assert f"compared the model with champion release {release_a}" in message
    assert f"the current release is {rollback_id}" in message
    # Re-evaluated against the current champion, B is still refused: it was rolled back.
    again = run(defs, instance, selection=["model_evaluation", "champion_model"])
    assert all(e.passed for e in evaluations(again).values())
    message = _refusal(again)
    assert f"was rolled back in release {rollback_id}" in message and "drift in region" in message
    assert current_release(e2i_home) == rollback_id
    # Only deliberately, with a reason, recorded in the manifest.
    no_reason = run(defs, instance, selection=["champion_model"], run_config=_override(" "))
    assert "override_rollback needs a reason" in _refusal(no_reason)
    forced = run(defs, instance, selection=["champion_model"], run_config=_override("fixed"))
    assert forced.success, failed_steps(forced)
    release_c = current_release(e2i_home)
    manifest_c = json.loads((e2i_home / "releases" / release_c / "manifest.json").read_text())
    assert manifest_c["override"] == {
        "rolled_back_in": rollback_id,
        "rollback_reason": "drift in region",
        "reason": "fixed",
    }
    assert manifest_c["model"]["model_sha256"] == model_b["model_sha256"]

    # 5. A model directory that vanished is not "up to date".
    assert not _plan(defs, instance, settings)["trained_model"].run  # control
    shutil.rmtree(e2i_home / model_b["path"])
    reason = _plan(defs, instance, settings)["trained_model"].reason
    assert reason.startswith("stored value: its model file") and "is missing" in reason
    assert "champion_model" in materialized(forced)
