"""The whole graph, then the model's life after it: a real Optuna study, MLflow in a
SQLite store under the test's E2I_HOME, LightGBM, the promotion gates, the release
manifest, a failing gate that leaves the champion alone, reuse vs force_new parity,
a second release and its rollback (job and command line).

Data are the product's generator at the default model size (5,000 patients): the
promotion gates judge real metrics, and smaller data make regional ROC-AUC noise.
The whole-graph run's event log also proves the metadata conventions: every table's
row count and column schema are those written, and the MLflow links open real objects.
"""

import json
import subprocess
import sys
from pathlib import Path

import dagster as dg
import optuna
from release_report_data import Page

from e2i_platform.contract import INPUT_TABLES
from e2i_platform.promotion.release_report_html import num
from e2i_platform.resources.mlflow import TRIAL_NUMBER_TAG, TRIAL_STATE_TAG
from e2i_platform.resources.publication import Publications
from e2i_platform.settings import load_settings
from e2i_platform.training.study_setup import pruning_rounds

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

REPO = Path(__file__).resolve().parents[2]
GATES = ("quality_gate", "calibration_gate", "latency_gate", "fairness_gate", "cost_gate")
MODEL_CHAIN = dg.AssetSelection.assets("trained_model", "model_evaluation", "champion_model")


def _client(settings):
    from mlflow.tracking import MlflowClient

    return MlflowClient(settings.under_home(settings.mlflow.tracking_uri))


def _alias(settings) -> str:
    version = (
        _client(settings)
        .get_model_version_by_alias(settings.mlflow.registered_model, "champion")
        .version
    )
    return str(version)


def _signature_inputs(settings, monkeypatch, version: str) -> list[str]:
    import mlflow

    # Only for this lookup, and through the environment: mlflow.set_tracking_uri would
    # also export its value (and its default, relative sqlite:///mlflow.db) to every
    # subprocess this test starts later.
    with monkeypatch.context() as m:
        m.setenv("MLFLOW_TRACKING_URI", settings.under_home(settings.mlflow.tracking_uri))
        info = mlflow.models.get_model_info(f"models:/{settings.mlflow.registered_model}/{version}")
    return info.signature.inputs.input_names()


def _mode(mode: str) -> dict:
    return {"ops": {"trained_model": {"config": {"run_mode": mode}}}}


TABLES = {
    *(f"raw_{t}" for t in INPUT_TABLES),
    *INPUT_TABLES,
    *("patient_features", "hcp_features", "trigger_features", "market_features"),
    "training_dataset",
    "patient_risk_scores",
}
RUN_LINKED = {"hpo_study", "trained_model", "model_evaluation", "champion_model"}
VERSION_LINKED = {"trained_model", "model_evaluation", "champion_model", "patient_risk_scores"}


def _materialized_metadata(result) -> dict[str, dict]:
    return {
        e.asset_key.to_user_string(): e.materialization.metadata
        for e in result.get_asset_materialization_events()
    }


def _assert_table_metadata(defs, result, home: Path) -> None:
    """Every table asset (the warehouse's Parquet): `dagster/row_count` is the rows this
    run wrote, `dagster/column_schema` their columns and dtypes, each column described."""
    import pyarrow.parquet as pq

    graph = defs.resolve_asset_graph()
    keys = graph.get_all_asset_keys()
    tables = {k.to_user_string() for k in keys if graph.get(k).io_manager_key == "warehouse"}
    assert tables == TABLES
    metadata, pubs = _materialized_metadata(result), Publications(home / "warehouse")
    for name in sorted(tables):
        meta, path = metadata[name], pubs.published_path(name, "parquet")
        assert pubs.published_run(name) == result.run_id, name  # this run's value
        assert meta["dagster/row_count"].value == pq.read_metadata(path).num_rows > 0, name
        written = pq.read_schema(path).empty_table().to_pandas().dtypes
        columns = meta["dagster/column_schema"].schema.columns
        assert [(c.name, c.type) for c in columns] == [(n, str(t)) for n, t in written.items()]
        assert all(c.description for c in columns), name
    # The contract's rules travel with the validated tables (not with the raw ones).
    journeys = {
        c.name: c.constraints
        for c in metadata["patient_journeys"]["dagster/column_schema"].schema.columns
    }
    assert journeys["patient_journey_id"].unique and not journeys["patient_journey_id"].nullable
    assert journeys["journey_end_date"].nullable
    assert "references hcp_profiles.hcp_id" in journeys["hcp_id"].other
    raw = metadata["raw_patient_journeys"]["dagster/column_schema"].schema.columns
    assert all(not c.constraints.other for c in raw)


def _mlflow_ui_bundle() -> str:
    """The MLflow UI shipped with the installed MLflow (its React router's routes)."""
    import mlflow

    build = Path(mlflow.__file__).parent / "server" / "js" / "build" / "static" / "js"
    return "".join(p.read_text(errors="replace") for p in build.glob("main.*.js"))


def _assert_mlflow_links(result, client, settings) -> dict[str, dict[str, list[str]]]:
    """Every MLflow link is URL metadata on the UI's routes, naming an object the store
    holds; returns each asset's links as route parts."""
    bundle = _mlflow_ui_bundle()
    assert '"/experiments/:experimentId/runs/:runUuid"' in bundle
    assert '"/models/:modelName/versions/:version"' in bundle
    found: dict[str, dict[str, list[str]]] = {}
    for name, meta in _materialized_metadata(result).items():
        links = {k: v for k, v in meta.items() if k.startswith("mlflow_") and k.endswith("_url")}
        expected = {"mlflow_run_url"} if name in RUN_LINKED else set()
        expected |= {"mlflow_model_version_url"} if name in VERSION_LINKED else set()
        assert set(links) == expected, name
        for key, value in links.items():
            assert isinstance(value, dg.UrlMetadataValue), (name, key)
            base, _, route = value.url.partition("/#/")
            assert base == "http://127.0.0.1:5000", value.url  # `mlflow ui`, local store
            parts = route.split("/")
            if key == "mlflow_run_url":
                assert parts[0] == "experiments" and parts[2] == "runs", value.url
                assert client.get_run(parts[3]).info.experiment_id == parts[1]
            else:
                assert parts[:3] == ["models", settings.mlflow.registered_model, "versions"]
                assert client.get_model_version(parts[1], parts[3]).status == "READY"
            found.setdefault(name, {})[key] = parts
    return found


def _report(home: Path, manifest: dict) -> Page:
    """The release report next to the manifest, the one the manifest names (sha256)."""
    import hashlib

    path = home / "releases" / manifest["release_id"] / "report.html"
    assert manifest["report"] == {
        "file": "report.html",
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }
    page = Page(path.read_text())
    assert page.scripts == 0 and page.external == []
    assert page.gate_rows == list(GATES)
    return page


def _assert_promotion_report(home: Path, manifest: dict, limits: dict, champion: bool) -> None:
    """The report shows each promotion gate's observed value against its configured limit,
    the model's curves (and the champion's, scored on the same test rows), regional
    ROC-AUC, and the comparison with the previous release."""
    page = _report(home, manifest)
    rows = {row[0]: row for row in page.tables["gate-table"][1:]}
    for gate, (name, limit) in limits.items():
        measures = manifest["gates"][f"model_evaluation.{gate}"]["measures"]
        assert measures[f"threshold_max_{name}"] == limit
        assert rows[gate][1] == "PASS", rows[gate]
        assert f"{name} {num(measures[f'observed_{name}'])}" in rows[gate][2], rows[gate]
        assert f"{name} ≤ {num(limit)}" in rows[gate][3], rows[gate]
    curves = 2 if champion else 1
    for figure in ("roc", "precision_recall", "calibration"):
        assert page.figures[figure]["polyline.curve"] == curves, figure
    regions = manifest["evaluation"]["model"]["region_auc"]
    compared = sum(r["compared"] for r in regions.values())
    assert page.figures["region_auc"]["rect.bar"] == compared * curves >= 2
    evaluation = manifest["evaluation"]
    assert evaluation["model"]["curves"]["roc"]["auc"] == manifest["metrics"]["roc_auc"]
    assert (
        evaluation["model"]["region_auc"]
        and len(evaluation["model"]["curves"]["roc"]["fpr"]) <= 101
    )
    assert ("curves" in evaluation["champion"]) is champion
    assert ("comparison-table" in page.tables) is champion
    assert manifest["features"]["registry_hash"] in "".join(page.text)


def test_whole_graph_then_promotion_gates_release_and_rollback(
    e2i_home, instance, monkeypatch, config_copy
):
    monkeypatch.setenv("E2I_PATIENTS", "5000")
    monkeypatch.setenv("E2I_HCPS", "400")
    monkeypatch.setenv("E2I_HPO_TRIALS", "12")
    settings = load_settings()
    defs = definitions(settings)

    # 1. The whole graph, once: every gate passes, the champion is released.
    result = run(defs, instance)
    assert result.success, failed_steps(result)
    checks = evaluations(result)
    assert checks and all(c.passed for c in checks.values()), {
        k: c.description for k, c in checks.items() if not c.passed
    }
    assert {f"model_evaluation.{g}" for g in GATES} | {"patient_risk_scores.schema"} <= set(checks)
    everything = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert materialized(result) == everything

    study = latest_metadata(instance, "hpo_study")
    assert study["decision"] == "new"
    assert study["warm_start"]["mode"] == "cold"
    assert study["trials"]["pruned"] > 0  # Hyperband really stops trials
    assert study["best_valid_auc"] > study["baseline_logreg_valid_auc"] - 0.05

    trained = json.loads((e2i_home / "warehouse" / "trained_model.json").read_text())
    assert trained["action"] == "train"
    model_dir = e2i_home / trained["path"]  # stored relative to the home
    assert not Path(trained["path"]).is_absolute()
    assert model_dir.parent.parent == e2i_home / "models" / settings.training.model_name
    assert sorted(p.name for p in model_dir.iterdir()) == [
        "metadata.json",
        "metrics.json",
        "model.txt",
    ]
    version = trained["mlflow"]["model_version"]
    assert _alias(settings) == version

    # MLflow holds one nested run per trial the study ran, under the study's run.
    client = _client(settings)
    _assert_table_metadata(defs, result, e2i_home)
    links = _assert_mlflow_links(result, client, settings)
    assert links["hpo_study"]["mlflow_run_url"][3] == study["mlflow"]["study_run_id"]
    for name in ("trained_model", "model_evaluation", "champion_model"):
        assert links[name]["mlflow_run_url"][3] == trained["mlflow"]["run_id"], name
    for name in VERSION_LINKED:
        assert links[name]["mlflow_model_version_url"][3] == version, name
    experiment = client.get_experiment_by_name(settings.mlflow.experiment)
    parent = study["mlflow"]["study_run_id"]
    trial_runs = client.search_runs(
        [experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent}'", max_results=1000
    )
    assert len(trial_runs) == sum(study["trials"].values()) == 12
    # Pruned trials are FINISHED runs (stopped by design), told apart by their state tag.
    assert {r.info.status for r in trial_runs} == {"FINISHED"}
    pruned_runs = [r for r in trial_runs if r.data.tags[TRIAL_STATE_TAG] == "PRUNED"]
    assert len(pruned_runs) == study["trials"]["pruned"] > 0
    # Each trial run holds every round's AUC; Optuna got only the pruner's rounds.
    record = json.loads((e2i_home / "warehouse" / "hpo_study.json").read_text())
    optuna_study = optuna.load_study(
        study_name=record["study_name"], storage=settings.under_home(settings.optuna.storage)
    )
    assert optuna_study.metric_names == ["valid_auc"]
    by_number = {t.number: t for t in optuna_study.trials}
    for r in trial_runs:
        trial = by_number[int(r.data.tags[TRIAL_NUMBER_TAG])]
        rounds = {m.step for m in client.get_metric_history(r.info.run_id, "valid_auc")}
        assert rounds == set(range(1, max(rounds) + 1)), r.info.run_name
        assert set(trial.intermediate_values) == {
            s for s in pruning_rounds(settings.optuna) if s <= max(rounds)
        }
    assert _signature_inputs(settings, monkeypatch, version) == trained["features"]

    release_id = current_release(e2i_home)
    manifest = json.loads((e2i_home / "releases" / release_id / "manifest.json").read_text())
    assert manifest["previous_release"] is None
    assert manifest["model"]["mlflow"]["model_version"] == version
    assert manifest["mlflow_alias"]["to_version"] == version
    assert manifest["params"]["rounds"] == trained["rounds"]
    assert (
        manifest["metrics"]["roc_auc"] == latest_metadata(instance, "model_evaluation")["roc_auc"]
    )
    for gate in GATES:
        assert manifest["gates"][f"model_evaluation.{gate}"]["passed"] is True
    assert manifest["gates"]["online_features.freshness"]["passed"] is True
    assert manifest["data_versions"]["training_dataset"]["data_version"]
    # Every upstream asset, down to the sources; nothing the model does not depend on.
    recorded = manifest["data_versions"]
    assert recorded["raw_patient_journeys"]["data_version"].startswith("generator-")
    assert {"model_evaluation", "trained_model", "hpo_study", "online_features"} <= set(recorded)
    assert "causal_paths" not in recorded and "champion_model" not in recorded
    assert all(v["data_version"] and v["run_id"] for v in recorded.values())
    assert manifest["features"]["registry_hash"]
    assert manifest["code_version"]
    promotion = settings.promotion
    limits = {
        "calibration_gate": ("brier", promotion.calibration_gate.max_brier),
        "latency_gate": ("p95_ms", promotion.latency_gate.max_p95_ms),
        "fairness_gate": ("gap", promotion.fairness_gate.max_region_auc_gap),
    }
    _assert_promotion_report(e2i_home, manifest, limits, champion=False)
    champion_meta = latest_metadata(instance, "champion_model")
    assert champion_meta["report"] == str(e2i_home / "releases" / release_id / "report.html")
    scores = latest_metadata(instance, "patient_risk_scores")
    assert scores["patients_scored"] > 1000 and scores["model_version"] == version

    # 2. Reuse is visible, and identical to what force_new produces.
    reused = run(defs, instance, selection=MODEL_CHAIN, run_config=_mode("reuse_if_exists"))
    assert reused.success, failed_steps(reused)
    assert latest_metadata(instance, "trained_model")["reused"] is True
    assert latest_metadata(instance, "champion_model")["decision"].startswith("unchanged")
    assert current_release(e2i_home) == release_id
    forced = run(
        defs,
        instance,
        selection=dg.AssetSelection.assets("trained_model"),
        run_config=_mode("force_new"),
    )
    assert forced.success, failed_steps(forced)
    again = json.loads((e2i_home / "warehouse" / "trained_model.json").read_text())
    assert again["action"] == "train" and again["variant"] == trained["variant"] + 1
    assert (e2i_home / again["path"] / "model.txt").read_bytes() == (
        model_dir / "model.txt"
    ).read_bytes()
    assert again["metrics"] == trained["metrics"]

    # 3. A failing promotion gate: nothing after it runs; champion and release untouched.
    edit_yaml(config_copy, "promotion", ("quality_gate", "min_roc_auc"), 0.99)
    releases_before = sorted(p.name for p in (e2i_home / "releases").iterdir())
    failed = run(
        defs,
        instance,
        selection=dg.AssetSelection.assets("model_evaluation", "champion_model"),
    )
    assert not failed.success
    gate = evaluations(failed)["model_evaluation.quality_gate"]
    assert gate.passed is False and gate.metadata["threshold_roc_auc"].value == 0.99
    assert "champion_model" not in materialized(failed)
    refused = run(defs, instance, selection=dg.AssetSelection.assets("champion_model"))
    assert "quality_gate on model_evaluation" in str(failed_steps(refused))
    assert sorted(p.name for p in (e2i_home / "releases").iterdir()) == releases_before
    assert _alias(settings) == version and current_release(e2i_home) == release_id
    edit_yaml(config_copy, "promotion", ("quality_gate", "min_roc_auc"), 0.65)

    # 4. Another seed is another model: a second release, then its rollback.
    edit_yaml(config_copy, "training", ("seed",), 8)
    # Another seed may trail the champion by more than the default tolerance.
    edit_yaml(config_copy, "promotion", ("quality_gate", "champion_tolerance"), 0.2)
    second = run(defs, instance, selection=MODEL_CHAIN)
    assert second.success, failed_steps(second)
    new_version = json.loads((e2i_home / "warehouse" / "trained_model.json").read_text())["mlflow"][
        "model_version"
    ]
    assert new_version != version and _alias(settings) == new_version
    second_release = current_release(e2i_home)
    second_manifest = json.loads(
        (e2i_home / "releases" / second_release / "manifest.json").read_text()
    )
    assert second_manifest["previous_release"] == release_id
    # The release before is the champion it was compared with: both sets of curves.
    _assert_promotion_report(e2i_home, second_manifest, limits, champion=True)
    assert latest_metadata(instance, "champion_model")["report"] == str(
        e2i_home / "releases" / second_release / "report.html"
    )

    assert roll_back(defs, instance, "e2e").success
    rollback_id = current_release(e2i_home)
    rollback = json.loads((e2i_home / "releases" / rollback_id / "manifest.json").read_text())
    assert rollback["kind"] == "rollback" and rollback["reason"] == "e2e"
    assert rollback["restores_release"] == release_id
    assert rollback["rolled_back_release"] == second_release
    assert _alias(settings) == version
    # Its report says what was restored, from which release, and why.
    page = _report(e2i_home, rollback)
    restored = dict(page.tables["restored-table"][1:])
    assert restored["Restored release"] == release_id
    assert restored["Rolled back release"] == second_release
    assert restored["Reason"] == "e2e"
    assert page.figures["roc"]["polyline.curve"] == 1  # the restored release's own curves
    assert latest_metadata(instance, "champion_model")["report"] == str(
        e2i_home / "releases" / rollback_id / "report.html"
    )
    assert rollback["requested_by"]["dagster_run_id"] is not None

    # The command line: nothing before the first release to go back to; refused, unchanged.
    cli = subprocess.run(
        [sys.executable, "-m", "e2i_platform.ops.rollback", "--reason", "again"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert cli.returncode == 1, cli.stdout + cli.stderr
    assert not (REPO / "mlflow.db").exists()  # nothing leaked into the checkout
    assert "has no previous release" in cli.stderr
    assert current_release(e2i_home) == rollback_id and _alias(settings) == version
