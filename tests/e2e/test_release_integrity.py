"""Release manifests carry their content hash, on a real instance, MLflow and LightGBM:
a manifest changed after it was written stops scoring and rollback (naming
releases/CURRENT and the manifest, the last good scores stay published), a CURRENT
naming a missing release likewise, and the repair command restores a CURRENT that
scores again, recorded on the asset graph.

300 patients cannot judge a model, so the promotion thresholds are relaxed, as in
test_promotion_integrity; this test is about the manifests.
"""

import json

from e2i_platform.lib.releases import CONTENT_HASH, REPAIR_COMMAND, manifest_sha256
from e2i_platform.ops.releases import main as releases_main
from e2i_platform.ops.releases import repair_on
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


def _error(result, step: str) -> str:
    """A failed step's error as `make run` and the UI show it (the user code's exception)."""
    from e2i_platform.ops.progress import failure_text

    failures = [e for e in result.all_events if e.is_step_failure and e.step_key == step]
    assert failures, failed_steps(result)
    return failure_text(failures[0].step_failure_data.error)


def _scores_state(home) -> tuple[bytes, bytes]:
    """The published scores and their publication record, byte for byte."""
    warehouse = home / "warehouse"
    return (
        (warehouse / "patient_risk_scores.parquet").read_bytes(),
        (warehouse / ".published" / "patient_risk_scores.json").read_bytes(),
    )


def test_a_broken_release_stops_scoring_until_the_repair_command_restores_current(
    e2i_home, instance, config_copy, capsys
):
    edit_yaml(config_copy, "promotion", ("quality_gate", "min_roc_auc"), 0.5)
    edit_yaml(config_copy, "promotion", ("quality_gate", "champion_tolerance"), 0.5)
    edit_yaml(config_copy, "promotion", ("fairness_gate", "max_region_auc_gap"), 1.0)
    settings = load_settings()
    defs = definitions(settings)
    first = run(defs, instance)
    assert first.success, failed_steps(first)
    release_a = current_release(e2i_home)
    manifest = e2i_home / "releases" / release_a / "manifest.json"
    original = manifest.read_bytes()
    written = json.loads(original)
    assert written[CONTENT_HASH] == manifest_sha256(written)
    published = _scores_state(e2i_home)
    pointer = e2i_home / "releases" / "CURRENT"

    # 1. One value changed after the manifest was written: scoring is refused, naming
    # CURRENT, the manifest and both hashes; its gate never runs; the scores stay.
    tampered = {**written, "metrics": {**written["metrics"], "threshold": 0.01}}
    manifest.write_text(json.dumps(tampered, indent=2, sort_keys=True))
    scored = run(defs, instance, selection=["patient_risk_scores"])
    assert not scored.success
    message = _error(scored, "patient_risk_scores")
    assert f"releases/CURRENT ({pointer}) names release {release_a}" in message
    assert f"its manifest {manifest} does not match its content hash" in message
    assert f"expected content_sha256 {written[CONTENT_HASH]}" in message
    assert f"actual {manifest_sha256(tampered)}" in message and REPAIR_COMMAND in message
    assert "patient_risk_scores" not in materialized(scored)
    assert not evaluations(scored)  # the schema gate did not run
    assert _scores_state(e2i_home) == published
    # ... and so is a rollback, with nothing changed.
    rolled = roll_back(defs, instance, "try")
    assert "rollback refused: releases/CURRENT" in " ".join(failed_steps(rolled).values())
    assert current_release(e2i_home) == release_a
    # The listing says what is broken and how to recover (exit 1).
    assert releases_main([]) == 1
    listed = capsys.readouterr().out
    assert "BROKEN: does not match its content hash" in listed and "<- CURRENT" in listed
    # The only release is broken: there is nothing to repair to.
    refused = repair_on(defs, instance, "manifest edited")
    assert "repair refused: repair: no intact release" in failed_steps(refused)["repair_releases"]
    assert manifest.read_bytes() != original and current_release(e2i_home) == release_a

    # 2. The manifest restored from a backup, CURRENT names a release that is not there.
    manifest.write_bytes(original)
    pointer.write_text("20990101T000000000000Z-promotion\n")
    missing = e2i_home / "releases" / "20990101T000000000000Z-promotion" / "manifest.json"
    scored = run(defs, instance, selection=["patient_risk_scores"])
    message = _error(scored, "patient_risk_scores")
    assert (
        f"releases/CURRENT ({pointer}) names release 20990101T000000000000Z-promotion, but "
        f"its manifest {missing} is missing." in message
    )
    assert _scores_state(e2i_home) == published

    # 3. The recovery command: a repair release restoring A, recorded on the graph.
    repaired = repair_on(defs, instance, "CURRENT named a missing release")
    assert repaired.success, failed_steps(repaired)
    outcome = repaired.output_for_node("repair_releases")
    release_r = current_release(e2i_home)
    assert outcome["release"]["release_id"] == release_r and release_r.endswith("-repair")
    assert outcome["release"]["restores_release"] == release_a
    assert outcome["current_was"] == "20990101T000000000000Z-promotion"
    champion = latest_metadata(instance, "champion_model")
    assert champion["kind"] == "repair" and champion["release_id"] == release_r
    assert champion["restored_manifest"] == "verified"
    assert releases_main([]) == 0
    assert f"CURRENT: {release_r} (intact)" in capsys.readouterr().out
    # make run keeps the repair, and the scores follow it.
    plan = {d.asset: d for d in plan_run(defs, instance, defs.resources["source"], settings)}
    assert not plan["champion_model"].run, plan["champion_model"].reason
    assert plan["patient_risk_scores"].run
    scored = run(defs, instance, selection=["patient_risk_scores"])
    assert scored.success, failed_steps(scored)
    assert all(e.passed for e in evaluations(scored).values())
    scores = latest_metadata(instance, "patient_risk_scores")
    assert scores["release_id"] == release_r and scores["release_kind"] == "repair"
    assert _scores_state(e2i_home) != published
