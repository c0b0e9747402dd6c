"""The release report: curve points are sklearn's own (thinned), and the HTML written next
to each manifest holds the gate table (observed against limit), the figures, the
comparison with the previous release, the versions, and for a rollback what was restored
and why -- escaped, self-contained, and never a half-published release."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from release_report_data import OFF, REGIONS, Page, model_evaluation, promote_evaluated
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    average_precision_score,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from e2i_platform.lib.releases import (
    REPORT,
    check_manifest,
    current_release,
    current_release_id,
    report_path,
)
from e2i_platform.promotion.release import new_release_id, promote, rollback
from e2i_platform.promotion.release_report_sections import PROMOTION_GATES
from e2i_platform.training.curves import MAX_POINTS, evaluation_curves, thin


def labelled(n: int, seed: int, ties: bool = False):
    """Labels that follow a score, with noise; `ties`: scores on a coarse grid."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=n)
    y = (signal + rng.normal(size=n) > 0.8).astype(int)
    score = 1 / (1 + np.exp(-(signal - 1)))
    return y, np.round(score, 1) if ties else score


@pytest.mark.parametrize("ties", [False, True])
def test_curve_points_are_sklearns_own_thinned(ties):
    y, score = labelled(3000, seed=3, ties=ties)
    curves = evaluation_curves(y, score)
    fpr, tpr, _ = roc_curve(y, score)
    keep = thin(len(fpr))
    roc = curves["roc"]
    assert len(roc["fpr"]) <= MAX_POINTS and roc["points_before_thinning"] == len(fpr)
    np.testing.assert_allclose(roc["fpr"], fpr[keep], atol=1e-6)
    np.testing.assert_allclose(roc["tpr"], tpr[keep], atol=1e-6)
    assert (roc["fpr"][0], roc["tpr"][0], roc["fpr"][-1], roc["tpr"][-1]) == (0, 0, 1, 1)
    assert roc["auc"] == pytest.approx(roc_auc_score(y, score), abs=1e-6)
    # The thinned curve still integrates to the AUC (within the thinning's error).
    assert np.trapezoid(roc["tpr"], roc["fpr"]) == pytest.approx(roc["auc"], abs=0.01)

    precision, recall, _ = precision_recall_curve(y, score)
    keep = thin(len(precision))
    pr = curves["precision_recall"]
    np.testing.assert_allclose(pr["precision"], precision[keep], atol=1e-6)
    np.testing.assert_allclose(pr["recall"], recall[keep], atol=1e-6)
    assert pr["recall"][0] == 1 and pr["recall"][-1] == 0 and pr["precision"][-1] == 1
    assert pr["average_precision"] == pytest.approx(average_precision_score(y, score), abs=1e-6)

    fraction, predicted = calibration_curve(y, score, n_bins=10, strategy="uniform")
    cal = curves["calibration"]
    np.testing.assert_allclose(cal["fraction_positive"], fraction, atol=1e-6)
    np.testing.assert_allclose(cal["mean_predicted"], predicted, atol=1e-6)
    edges = np.linspace(0, 1, 11)
    counts = [
        int((((score > edges[i]) | (i == 0)) & (score <= edges[i + 1])).sum()) for i in range(10)
    ]
    assert cal["rows"] == [c for c in counts if c] and sum(cal["rows"]) == len(y)
    assert (curves["rows"], curves["positives"]) == (len(y), int(y.sum()))
    json.dumps(curves, allow_nan=False)  # plain JSON: it goes into the manifest


def test_thinning_keeps_both_ends_and_short_curves_whole():
    assert list(thin(7)) == list(range(7))
    kept = thin(1000)
    assert len(kept) <= MAX_POINTS and kept[0] == 0 and kept[-1] == 999
    assert evaluation_curves([1, 1, 1], [0.2, 0.5, 0.9])["recorded"] is False


# --- the report on disk --------------------------------------------------------------


def page_of(home: Path, release: dict) -> Page:
    path = report_path(home, release["release_id"])
    text = path.read_text()
    assert release[REPORT] == {
        "file": "report.html",
        "sha256": hashlib.sha256(text.encode()).hexdigest(),
    }
    assert check_manifest(home, release["release_id"]).problem is None
    page = Page(text)
    assert page.scripts == 0 and page.external == []  # self-contained
    return page


def test_a_promotion_report_shows_gates_curves_regions_comparison_and_versions(tmp_path):
    promote_evaluated(tmp_path, "m0", model_evaluation(1, 0.8, None))
    second = promote_evaluated(tmp_path, "m1", model_evaluation(1, 0.3, 1.2))
    page = page_of(tmp_path, second)

    assert page.gate_rows == list(PROMOTION_GATES)
    header, *rows = page.tables["gate-table"]
    assert header == ["Gate", "Result", "Observed", "Limit", "Summary"]
    by_gate = {row[0]: row for row in rows}
    assert by_gate["calibration_gate"][2] == f"brier {second['metrics']['brier']:.4f}"
    assert by_gate["calibration_gate"][3] == "brier ≤ 0.2000"
    quality = second["gates"]["model_evaluation.quality_gate"]["measures"]
    assert by_gate["quality_gate"][3] == f"roc_auc ≥ {quality['threshold_roc_auc']:.4f}"
    assert by_gate["cost_gate"][2].count("production_seconds 12.5000") == 1
    assert "model_mb ≤ 50" in by_gate["cost_gate"][3]
    assert all(row[1] in ("PASS", "FAIL") for row in rows)
    others = {row[0]: row[1:] for row in page.tables["blocking-gates"][1:]}
    assert others["online_features.freshness"] == ["FAIL", "no", "<stale>"]  # escaped, shown
    # Planned after the release in its own run: not a gate that failed to hold.
    assert others["patient_risk_scores.schema"][:2] == ["not judged", "not yet"]

    for figure in ("roc", "precision_recall", "calibration"):
        assert page.figures[figure]["polyline.curve"] == 2  # the model and the champion
    assert page.figures["region_auc"]["rect.bar"] == 2 * len(REGIONS)
    assert [r[0] for r in page.tables["region-table"][1:]] == sorted(REGIONS)

    comparison = {row[0]: row[1:] for row in page.tables["comparison-table"][1:]}
    previous = current_release(tmp_path)["previous_release"]
    assert page.tables["comparison-table"][0][2] == f"Previous {previous}"
    ours, theirs, delta = comparison["roc_auc"]
    assert float(delta) == pytest.approx(float(ours) - float(theirs), abs=2e-4)

    for heading in (
        "Gate results",
        "ROC, precision-recall and calibration curves",
        "ROC-AUC per region",
        "Comparison with the previous champion",
        "Data and feature versions",
        "Model, MLflow run and code",
    ):
        assert heading in page.headings
    assert page.tables["data-versions"][1] == ["training_dataset", "dv-1", "r-1"]
    text = "".join(page.text)
    assert "abc123" in text and "discontinuation_model_v1" in text and "code-<1>" in text


def test_a_rollback_report_names_the_restored_release_reason_and_run(tmp_path):
    first = promote_evaluated(tmp_path, "m0", model_evaluation(2, 0.8, None))
    second = promote_evaluated(tmp_path, "m1", model_evaluation(2, 0.3, 1.2))
    reason = "<script>alert('AUC drop')</script> & drift"
    back = rollback(tmp_path, OFF, reason, run_id="dagster-run-42")
    page = page_of(tmp_path, back)
    raw = report_path(tmp_path, back["release_id"]).read_text()
    assert "<script>" not in raw and "&lt;script&gt;" in raw

    assert "What was restored, and why" in page.headings
    rows = dict(row for row in page.tables["restored-table"][1:])
    assert rows["Restored release"] == first["release_id"]
    assert rows["Rolled back release"] == second["release_id"]
    assert rows["Reason"] == reason
    assert rows["Dagster run"] == "dagster-run-42"
    # The gates and curves of the restored release, from its own manifest.
    assert page.gate_rows == list(PROMOTION_GATES)
    assert page.figures["roc"]["polyline.curve"] == 1  # m0 had no champion to compare with
    assert f"Curves of restored release {first['release_id']}" in "".join(page.text)
    assert page.tables["comparison-table"][0][2] == f"Previous {second['release_id']}"


def test_a_release_without_curves_gets_a_report_that_says_so(tmp_path):
    """A manifest as written before curves were kept (no evaluation, gates without
    observed/limit): the report renders and says what is missing."""
    manifest = {
        "release_id": new_release_id("promotion"),
        "kind": "promotion",
        "created_at": "now",
        "model": {"model_file": "models/m/model.txt", "model_sha256": "sha-m", "mlflow": {}},
        "metrics": {"roc_auc": 0.71, "brier": 0.18},
        "params": {},
        "data_versions": {},
        "features": {},
        "gates": {"model_evaluation.quality_gate": {"passed": True, "summary": "ok"}},
        "code_version": "c",
        "previous_release": None,
    }
    page = page_of(tmp_path, promote(tmp_path, OFF, manifest))
    text = " ".join(page.text)
    assert "Curves were not recorded for this release" in text
    assert "Per-region ROC-AUC was not recorded" in text
    assert page.figures == {}
    rows = {row[0]: row for row in page.tables["gate-table"][1:]}
    assert rows["quality_gate"][1:3] == ["PASS", "roc_auc 0.7100"]
    assert rows["quality_gate"][3].startswith("not recorded")
    assert rows["cost_gate"][1] == "not judged"


def test_a_report_that_cannot_be_made_fails_the_release_before_it_is_published(
    tmp_path, monkeypatch
):
    first = promote_evaluated(tmp_path, "m0", model_evaluation(4, 0.5, None))

    def broken(home, manifest):
        raise ValueError("cannot draw")

    monkeypatch.setattr("e2i_platform.promotion.release_report.release_report", broken)
    with pytest.raises(ValueError, match="cannot draw"):
        promote_evaluated(tmp_path, "m1", model_evaluation(4, 0.3, 0.5))
    assert current_release_id(tmp_path) == first["release_id"]
    assert sorted(p.name for p in (tmp_path / "releases").iterdir() if p.is_dir()) == [
        first["release_id"]
    ]


def test_a_malformed_manifest_still_gets_a_report_that_says_what_it_could_not_draw(tmp_path):
    """A rollback or repair is never stopped by its report: values of the wrong type in
    an old or hand-edited manifest give a notice in place of that section."""
    from e2i_platform.promotion.release_report import render_release_report

    released = promote_evaluated(tmp_path, "m0", model_evaluation(2, 0.5, None))
    odd = json.loads(json.dumps(released))
    odd["evaluation"]["model"]["curves"] = None
    odd["evaluation"]["model"]["region_auc"] = {"west": None}
    odd["features"]["feature_service"]["views"] = None
    html = render_release_report(odd, {})
    assert html.count("could not be drawn from the manifest") >= 2
    assert 'id="gate-table"' in html  # the sections that can be drawn still are
