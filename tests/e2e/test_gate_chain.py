"""The gate chain in real Dagster runs: raw -> schema -> validated -> expectations ->
downstream. Gates block in the same run and, through the guard, in later runs."""

from datetime import timedelta

import dagster as dg
import pandas as pd
import pytest

from e2i_platform.contract import INPUT_TABLES
from e2i_platform.features.specs import VIEWS

from support import (
    definitions,
    evaluations,
    failed_steps,
    journey_consumer,
    materialized,
    run,
    table_selection,
    write_landing,
)


def test_valid_generated_data_pass_every_gate_for_every_table(settings, instance):
    defs = definitions(settings, [journey_consumer])
    # Everything up to the training set; the model stages need model-sized data and are
    # run whole in test_model_lifecycle.
    model_stages = dg.AssetSelection.assets("hpo_study").downstream()
    result = run(defs, instance, selection=dg.AssetSelection.all() - model_stages)
    assert result.success, failed_steps(result)
    evals = evaluations(result)
    expected = {f"raw_{t}.schema" for t in INPUT_TABLES} | {
        f"{t}.expectations" for t in INPUT_TABLES
    }
    expected |= {"patient_journeys.references_resolve", "treatment_events.references_resolve"}
    expected |= {"online_features.freshness", "training_dataset.no_leakage"}
    assert set(evals) == expected
    assert all(e.passed for e in evals.values()), {k: e.description for k, e in evals.items()}
    features = {*VIEWS, "feature_registry", "online_features", "training_dataset"}
    assert materialized(result) == (
        {f"raw_{t}" for t in INPUT_TABLES} | set(INPUT_TABLES) | features | {"journey_consumer"}
    )
    # Raw metadata says where the data came from.
    raw = instance.get_latest_materialization_event(dg.AssetKey("raw_hcp_profiles"))
    meta = raw.asset_materialization.metadata
    assert meta["source"].data["kind"] == "generator"
    assert meta["source"].data["seed"] == 11 and meta["source"].data["patients"] == 300
    assert meta["dagster/row_count"].value == 40
    assert {c.name for c in meta["dagster/column_schema"].schema.columns} >= {"hcp_id", "npi"}


def run_journeys_and_consumer(settings, instance):
    """Journeys (with the HCPs they reference) and the downstream consumer, in one run."""
    defs = definitions(settings, [journey_consumer])
    selection = table_selection("patient_journeys") | dg.AssetSelection.assets("journey_consumer")
    return defs, run(defs, instance, selection=selection)


def _break(df: pd.DataFrame, family: str) -> pd.DataFrame:
    df = df.copy()
    if family == "range":
        df.loc[df.index[:5], "disease_severity"] = 42.0
    elif family == "enum":
        df.loc[df.index[:5], "brand"] = "Aspirin"
    elif family == "id_format":
        df.loc[df.index[:5], "patient_id"] = "P-1"
    elif family == "cross_column":
        df.loc[df.index[:5], "ingestion_timestamp"] = df.loc[df.index[:5], "source_timestamp"] - (
            pd.Timedelta(hours=1)
        )
    elif family == "unique":
        df.loc[df.index[1], "patient_journey_id"] = df.loc[df.index[0], "patient_journey_id"]
    elif family == "dtype":
        df["disease_severity"] = df["disease_severity"].astype(object)
        df.loc[df.index[0], "disease_severity"] = "severe"
    elif family == "required":
        df.loc[df.index[0], "gender"] = None
    else:
        raise AssertionError(family)
    return df


@pytest.mark.parametrize(
    "family", ["range", "enum", "id_format", "cross_column", "unique", "dtype", "required"]
)
def test_schema_failure_blocks_validated_table_in_the_same_run(
    settings, instance, generated, e2i_home, family
):
    # A text file is the only way a value of the wrong type arrives in a column.
    fmt = "csv" if family == "dtype" else "parquet"
    broken = _break(generated.table("patient_journeys"), family)
    write_landing(e2i_home, "patient_journeys", broken, fmt=fmt)
    defs, result = run_journeys_and_consumer(settings, instance)
    evals = evaluations(result)
    gate = evals["raw_patient_journeys.schema"]
    assert gate.passed is False and gate.severity == dg.AssetCheckSeverity.ERROR
    assert gate.metadata["failing_rows"].value >= 1
    # The raw data are stored (evidence), nothing after the gate ran.
    assert materialized(result) == {"raw_patient_journeys", "raw_hcp_profiles", "hcp_profiles"}
    assert "patient_journeys.expectations" not in evals


def test_critical_expectation_failure_blocks_downstream_in_the_same_run(
    settings, instance, generated, e2i_home
):
    journeys = generated.table("patient_journeys")
    # Valid on every row, but a mean far below the critical band of config/quality.yaml.
    journeys["data_quality_score"] = 0.3
    write_landing(e2i_home, "patient_journeys", journeys)
    defs, result = run_journeys_and_consumer(settings, instance)
    evals = evaluations(result)
    assert evals["raw_patient_journeys.schema"].passed
    ge = evals["patient_journeys.expectations"]
    assert ge.passed is False and ge.severity == dg.AssetCheckSeverity.ERROR
    failed = {r["id"]: r for r in ge.metadata["failed_expectations"].data}
    assert list(failed) == ["mean:data_quality_score"]
    assert failed["mean:data_quality_score"]["observed"] == pytest.approx(0.3)
    assert failed["mean:data_quality_score"]["threshold"] == "0.6 <= mean <= 1.0"
    assert "journey_consumer" not in materialized(result)


def test_broken_reference_blocks_downstream_in_the_same_run(
    settings, instance, generated, e2i_home
):
    journeys = generated.table("patient_journeys")
    journeys.loc[journeys.index[:2], "hcp_id"] = "HCP99999999"  # well-formed, but no such HCP
    write_landing(e2i_home, "patient_journeys", journeys)
    defs, result = run_journeys_and_consumer(settings, instance)
    evals = evaluations(result)
    assert evals["raw_patient_journeys.schema"].passed
    assert evals["patient_journeys.expectations"].passed
    refs = evals["patient_journeys.references_resolve"]
    assert refs.passed is False and refs.severity == dg.AssetCheckSeverity.ERROR
    assert refs.metadata["failure_counts"].data == {"hcp_id not in hcp_profiles.hcp_id": 2}
    assert "journey_consumer" not in materialized(result)
    # And in a later run of the consumer alone.
    later = run(defs, instance, selection=["journey_consumer"])
    assert "gate references_resolve on patient_journeys" in failed_steps(later)["journey_consumer"]


def test_warn_only_expectation_failure_does_not_block_and_is_visible(
    settings, instance, e2i_home, config_copy
):
    import yaml

    quality = yaml.safe_load((config_copy / "quality.yaml").read_text())
    quality["tables"]["patient_journeys"]["distributions"]["engagement_score"] = {
        "mean": {"min": 9.0, "max": 10.0},
        "severity": "warning",
    }
    (config_copy / "quality.yaml").write_text(yaml.safe_dump(quality))
    from e2i_platform.settings import load_settings

    defs, result = run_journeys_and_consumer(load_settings(), instance)
    assert result.success, failed_steps(result)
    ge = evaluations(result)["patient_journeys.expectations"]
    assert ge.passed is False and ge.severity == dg.AssetCheckSeverity.WARN
    assert [r["id"] for r in ge.metadata["failed_expectations"].data] == ["mean:engagement_score"]
    assert "journey_consumer" in materialized(result)
    # Across runs too: a WARN does not close the gate.
    again = run(defs, instance, selection=["journey_consumer"])
    assert again.success, failed_steps(again)


def test_gate_holds_across_runs_until_the_data_are_fixed(settings, instance, generated, e2i_home):
    good = generated.table("patient_journeys")
    defs = definitions(settings)
    # 1. Good data: the validated table exists (the last good data).
    assert run(defs, instance, selection=table_selection("patient_journeys")).success
    validated_file = e2i_home / "warehouse" / "patient_journeys.parquet"
    last_good = pd.read_parquet(validated_file)

    # 2. Bad data land: the gate fails, the validated table keeps the last good data.
    write_landing(e2i_home, "patient_journeys", _break(good, "enum"))
    result = run(defs, instance, selection=table_selection("patient_journeys"))
    assert evaluations(result)["raw_patient_journeys.schema"].passed is False
    pd.testing.assert_frame_equal(pd.read_parquet(validated_file), last_good)

    # 3. A later run of the child alone is refused, naming the gate and its result.
    child = run(defs, instance, selection=["patient_journeys"])
    assert not child.success
    (message,) = failed_steps(child).values()
    assert "patient_journeys refused to run" in message
    assert "gate schema on raw_patient_journeys" in message
    assert "FAILED (ERROR)" in message and "rows fail the patient_journeys contract" in message
    pd.testing.assert_frame_equal(pd.read_parquet(validated_file), last_good)

    # 4. Fixed data: the gate passes again and the child runs on its own.
    write_landing(e2i_home, "patient_journeys", good)
    assert run(defs, instance, selection=dg.AssetSelection.assets("raw_patient_journeys")).success
    child = run(defs, instance, selection=["patient_journeys"])
    assert child.success, failed_steps(child)
    assert materialized(child) == {"patient_journeys"}


def test_guard_refuses_when_the_gate_has_not_seen_the_latest_upstream(settings, instance):
    defs = definitions(settings)
    assert run(defs, instance, selection=table_selection("triggers")).success
    # Rematerialize the raw table without its check: the gate's verdict is now stale.
    raw_only = run(
        defs, instance, selection=dg.AssetSelection.assets("raw_triggers").without_checks()
    )
    assert raw_only.success and not evaluations(raw_only)
    child = run(defs, instance, selection=["triggers"])
    assert not child.success
    (message,) = failed_steps(child).values()
    assert "has not evaluated the latest materialization" in message


def test_malformed_landing_file_fails_the_raw_asset_and_nothing_downstream(
    settings, instance, e2i_home
):
    defs = definitions(settings)
    assert run(defs, instance, selection=table_selection("causal_paths")).success
    raw_file = e2i_home / "warehouse" / "raw_causal_paths.parquet"
    before = raw_file.read_bytes()
    landing = e2i_home / "landing" / "causal_paths.parquet"
    landing.parent.mkdir(exist_ok=True)
    landing.write_bytes(b"PAR1 garbage")
    result = run(defs, instance, selection=table_selection("causal_paths"))
    assert not result.success
    failures = failed_steps(result)
    assert set(failures) == {"raw_causal_paths"}
    assert str(landing) in failures["raw_causal_paths"]
    assert "is not readable Parquet" in failures["raw_causal_paths"]
    assert materialized(result) == set()
    assert raw_file.read_bytes() == before  # the last good raw data stay


def test_production_never_trains_on_invented_data(instance, e2i_home, monkeypatch):
    """Under the `landing` policy (prod's default) a table with no landing file fails its
    raw asset naming the file; nothing downstream runs and the last good data stay; and
    the schema verdict on the earlier generated rows no longer holds once the policy
    changes."""
    from e2i_platform.settings import load_settings

    defs = definitions(load_settings())
    assert run(defs, instance, selection=table_selection("causal_paths")).success
    raw_file = e2i_home / "warehouse" / "raw_causal_paths.parquet"
    before = raw_file.read_bytes()

    monkeypatch.setenv("E2I_SOURCE_POLICY", "landing")
    landing_only = definitions(load_settings())
    # The schema gate passed generated rows under `auto`: that pass does not hold under
    # `landing`, so nothing downstream may read the generated table any more.
    refused = run(landing_only, instance, selection=["causal_paths"])
    assert not refused.success
    assert (
        "gate schema on raw_causal_paths: it was judged under configuration"
        in (failed_steps(refused)["causal_paths"])
    )
    result = run(landing_only, instance, selection=table_selection("causal_paths"))
    assert not result.success
    failures = failed_steps(result)
    assert set(failures) == {"raw_causal_paths"}
    expected = e2i_home / "landing" / "causal_paths.parquet"
    assert (
        "source policy 'landing' needs a landing file for table 'causal_paths'"
        in (failures["raw_causal_paths"])
    )
    assert f"expected {expected} or {expected.with_suffix('.csv')}" in failures["raw_causal_paths"]
    assert materialized(result) == set()
    assert raw_file.read_bytes() == before


def test_landing_file_replaces_generator_and_is_recorded(settings, instance, generated, e2i_home):
    import hashlib

    path = write_landing(e2i_home, "triggers", generated.table("triggers").head(50), fmt="csv")
    defs = definitions(settings)
    result = run(defs, instance, selection=table_selection("triggers"))
    assert result.success, failed_steps(result)
    meta = instance.get_latest_materialization_event(
        dg.AssetKey("raw_triggers")
    ).asset_materialization.metadata
    assert meta["source"].data == {
        "kind": "landing_file",
        "path": str(path),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "policy": "auto",
    }
    assert meta["source_policy"].value == "auto"
    assert meta["dagster/row_count"].value == 50


def test_automation_respects_blocking_gates(settings, instance, generated, e2i_home):
    defs = definitions(settings)
    journeys = dg.AssetKey("patient_journeys")

    # Control: plain eager() (Dagster's default) on the same graph and instance.
    def eager_only(spec: dg.AssetSpec) -> dg.AssetSpec:
        return spec.replace_attributes(automation_condition=dg.AutomationCondition.eager())

    naive = dg.Definitions(
        assets=[a.map_asset_specs(eager_only) for a in defs.assets],
        asset_checks=defs.asset_checks,
        resources=defs.resources,
    )
    # Initial evaluations: conditions start tracking updates from here.
    gated_tick = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    naive_tick = dg.evaluate_automation_conditions(defs=naive, instance=instance)

    write_landing(e2i_home, "patient_journeys", _break(generated.table("patient_journeys"), "enum"))
    run(defs, instance, selection=dg.AssetSelection.assets("raw_patient_journeys"))
    gated_tick = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, cursor=gated_tick.cursor
    )
    naive_tick = dg.evaluate_automation_conditions(
        defs=naive, instance=instance, cursor=naive_tick.cursor
    )
    assert naive_tick.get_num_requested(journeys) == 1  # eager() alone ignores the failed gate
    assert gated_tick.get_num_requested(journeys) == 0

    write_landing(e2i_home, "patient_journeys", generated.table("patient_journeys"))
    run(defs, instance, selection=dg.AssetSelection.assets("raw_patient_journeys"))
    gated_tick = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, cursor=gated_tick.cursor
    )
    assert gated_tick.get_num_requested(journeys) == 1


def test_stale_generated_data_fail_recency(e2i_home, instance, monkeypatch):
    """Data anchored 30 days ago are historical: the critical recency expectation blocks."""
    from datetime import UTC, datetime

    from e2i_platform.settings import load_settings

    old = (datetime.now(UTC) - timedelta(days=30)).replace(tzinfo=None)
    monkeypatch.setenv("E2I_ANCHOR", old.isoformat(timespec="seconds"))
    defs = definitions(load_settings())
    result = run(defs, instance, selection=table_selection("treatment_events"))
    meta = instance.get_latest_materialization_event(
        dg.AssetKey("raw_treatment_events")
    ).asset_materialization.metadata
    assert meta["source"].data["anchor"] == old.isoformat(timespec="seconds")
    ge = evaluations(result)["treatment_events.expectations"]
    assert ge.passed is False and ge.severity == dg.AssetCheckSeverity.ERROR
    assert "recency:event_date" in [r["id"] for r in ge.metadata["failed_expectations"].data]
