"""Verdicts bound to what they judged, on real Dagster instances: a second actor
changes a parent, the configuration, the clock or the stored files between a gate's
verdict and its use, and the guard, automation and the `make run` planner all refuse
to use it. Rejected values are never published."""

import sqlite3
import time
from datetime import UTC, datetime, timedelta

import dagster as dg
import pandas as pd
import pytest
import time_machine

from e2i_platform.contract import INPUT_TABLES
from e2i_platform.lib.gates import gated_asset
from e2i_platform.ops.reuse import plan_run
from e2i_platform.settings import load_settings

from support import (
    FEATURE_CHAIN,
    definitions,
    edit_yaml,
    evaluations,
    failed_steps,
    journey_consumer,
    materialized,
    run,
    table_selection,
    write_landing,
)


@gated_asset(name="online_consumer", deps=["online_features"], group_name="test")
def online_consumer(context) -> int:
    """Stands in for anything that reads the online store."""
    return 1


def _refusal(result) -> str:
    (message,) = failed_steps(result).values()
    return message


def _decisions(defs, instance, settings) -> dict:
    return {d.asset: d for d in plan_run(defs, instance, defs.resources["source"], settings)}


def test_a_replaced_parent_voids_references_resolve(settings, instance, generated, e2i_home):
    defs = definitions(settings, [journey_consumer])
    first = run(defs, instance, selection=table_selection("patient_journeys"))
    assert first.success, failed_steps(first)
    assert run(defs, instance, selection=["journey_consumer"]).success  # control: it holds

    # Another actor lands a schema-valid subset of the HCPs: most journeys are orphans now,
    # but the journeys' own materialization did not change.
    hcps = generated.table("hcp_profiles")
    write_landing(e2i_home, "hcp_profiles", hcps.head(20))
    replaced = run(defs, instance, selection=table_selection("hcp_profiles"))
    assert replaced.success, failed_steps(replaced)
    hcp_run = replaced.run_id

    refused = run(defs, instance, selection=["journey_consumer"])
    message = _refusal(refused)
    assert "gate references_resolve on patient_journeys" in message
    assert f"it judged hcp_profiles of run {first.run_id}" in message
    assert f"the latest hcp_profiles is from run {hcp_run}" in message
    # The planner applies the same rule: the journeys run again so the gate re-judges.
    decisions = _decisions(defs, instance, settings)
    assert decisions["patient_journeys"].run
    assert "references_resolve" in decisions["patient_journeys"].reason
    assert decisions["hcp_profiles"].run is False

    # Re-judged on the new parent, the gate fails: the orphans are named.
    again = run(defs, instance, selection=dg.AssetSelection.assets("patient_journeys"))
    refs = evaluations(again)["patient_journeys.references_resolve"]
    assert refs.passed is False and refs.metadata["failing_rows"].value > 0
    assert "journey_consumer" not in materialized(run(defs, instance, ["journey_consumer"]))


def test_a_changed_threshold_voids_the_verdict(settings, instance, e2i_home, config_copy):
    defs = definitions(load_settings(), [journey_consumer])
    assert run(defs, instance, selection=table_selection("patient_journeys")).success
    edit_yaml(
        config_copy,
        "quality",
        ("tables", "patient_journeys", "distributions", "engagement_score", "mean", "min"),
        3.5,
    )
    tightened = load_settings()
    defs = definitions(tightened, [journey_consumer])
    message = _refusal(run(defs, instance, selection=["journey_consumer"]))
    assert "gate expectations on patient_journeys: it was judged under configuration" in message
    assert _decisions(defs, instance, tightened)["patient_journeys"].run
    # Other tables' verdicts are untouched by this table's thresholds.
    assert not _decisions(defs, instance, tightened)["raw_patient_journeys"].run


def test_a_retry_judges_the_gates_again(instance, e2i_home, config_copy, monkeypatch):
    """A step retried after a transient failure does not reuse its first attempt's
    verdicts: a threshold tightened between the attempts refuses the retry."""
    monkeypatch.setenv("E2I_RETRY_WAIT_SECONDS", "0.05")
    attempts: list[int] = []

    @gated_asset(name="retried_consumer", deps=["patient_journeys"], group_name="test")
    def retried_consumer(context) -> int:
        """Fails once as if its store were away; meanwhile a threshold is tightened."""
        attempts.append(context.retry_number)
        edit_yaml(
            config_copy,
            "quality",
            ("tables", "patient_journeys", "distributions", "engagement_score", "mean", "min"),
            3.5,
        )
        raise ConnectionRefusedError("store away")

    defs = definitions(load_settings(), [retried_consumer])
    assert run(defs, instance, selection=table_selection("patient_journeys")).success
    result = run(defs, instance, selection=["retried_consumer"])
    assert not result.success and attempts == [0]  # the retry never reached the body
    assert sum(e.event_type_value == "STEP_UP_FOR_RETRY" for e in result.all_events) == 1
    message = _refusal(result)
    assert "retried_consumer refused to run" in message
    assert "gate expectations on patient_journeys: it was judged under configuration" in message


def test_a_rejected_value_is_never_published(settings, instance, generated, e2i_home):
    defs = definitions(settings, [journey_consumer])
    assert run(defs, instance, selection=table_selection("patient_journeys")).success
    published = e2i_home / "warehouse" / "patient_journeys.parquet"
    before = published.read_bytes()

    journeys = generated.table("patient_journeys")
    journeys["data_quality_score"] = 0.3  # schema-valid, fails a critical expectation
    write_landing(e2i_home, "patient_journeys", journeys)
    result = run(defs, instance, selection=table_selection("patient_journeys"))
    ge = evaluations(result)["patient_journeys.expectations"]
    assert ge.passed is False and ge.severity == dg.AssetCheckSeverity.ERROR
    # The validated table was materialized (and audited), but readers still see the last
    # good value, byte for byte; the rejected one is kept aside and named.
    assert "patient_journeys" in materialized(result)
    assert published.read_bytes() == before
    rejected = ge.metadata["rejected_value"].value
    assert rejected.endswith(f"{result.run_id}.parquet")
    assert (pd.read_parquet(rejected)["data_quality_score"] == 0.3).all()
    assert f"run {result.run_id}" not in ge.metadata["published_value_kept"].value
    # Nothing downstream reads it, in this run or a later one.
    assert "journey_consumer" not in materialized(result)
    assert "FAILED (ERROR)" in _refusal(run(defs, instance, selection=["journey_consumer"]))


def test_make_run_does_not_trust_the_event_log_alone(settings, instance, e2i_home):
    defs = definitions(settings)
    assert run(defs, instance, selection=table_selection("causal_paths")).success
    assert not _decisions(defs, instance, settings)["causal_paths"].run  # control
    (e2i_home / "warehouse" / "causal_paths.parquet").unlink()
    decision = _decisions(defs, instance, settings)["causal_paths"]
    assert decision.run and "stored value: its published file" in decision.reason
    assert "missing" in decision.reason

    (e2i_home / "warehouse" / "raw_causal_paths.parquet").write_bytes(b"PAR1 not parquet")
    decision = _decisions(defs, instance, settings)["raw_causal_paths"]
    assert decision.run and "sha256 differs" in decision.reason


def test_guard_and_automation_agree_on_error_and_warn(instance, e2i_home, config_copy, generated):
    """The same instance, the same gate results: what the guard lets run, automation
    requests, and what it refuses, automation does not (Dagster's own
    all_deps_blocking_checks_passed, the control, stalls on a WARN)."""
    downstream = dg.AssetKey("patient_features")
    edit_yaml(
        config_copy,
        "quality",
        ("tables", "patient_journeys", "distributions", "engagement_score"),
        {"mean": {"min": 9.0, "max": 10.0}, "severity": "warning"},
    )
    defs = definitions(load_settings())

    def dagster_own(spec: dg.AssetSpec) -> dg.AssetSpec:
        return spec.replace_attributes(
            automation_condition=dg.AutomationCondition.eager()
            & dg.AutomationCondition.all_deps_blocking_checks_passed()
        )

    control = dg.Definitions(
        assets=[a.map_asset_specs(dagster_own) for a in defs.assets],
        asset_checks=defs.asset_checks,
        resources=defs.resources,
    )
    ticks = {
        "gated": dg.evaluate_automation_conditions(defs=defs, instance=instance),
        "control": dg.evaluate_automation_conditions(defs=control, instance=instance),
    }

    def tick(name, d):
        ticks[name] = dg.evaluate_automation_conditions(
            defs=d, instance=instance, cursor=ticks[name].cursor
        )
        return ticks[name].get_num_requested(downstream)

    inputs = table_selection("patient_journeys") | table_selection("treatment_events")
    result = run(defs, instance, selection=inputs)
    assert result.success, failed_steps(result)
    ge = evaluations(result)["patient_journeys.expectations"]
    assert ge.passed is False and ge.severity == dg.AssetCheckSeverity.WARN
    assert tick("gated", defs) == 1  # WARN informs, never blocks
    assert tick("control", control) == 0  # Dagster's condition stalls on the WARN
    guarded = run(defs, instance, selection=["patient_features"])
    assert guarded.success, failed_steps(guarded)  # and the guard agrees with ours

    # ERROR: neither runs it.
    bad = generated.table("patient_journeys")
    bad.loc[bad.index[:3], "brand"] = "Aspirin"
    write_landing(e2i_home, "patient_journeys", bad)
    run(defs, instance, selection=table_selection("patient_journeys"))
    assert tick("gated", defs) == 0
    message = _refusal(run(defs, instance, selection=["patient_features"]))
    assert "patient_features refused to run" in message
    assert "gate expectations on patient_journeys" in message


def _break_online(e2i_home, settings, keep: int) -> None:
    """Delete every online patient_features row but those of `keep` entities."""
    table = f"{settings.platform.feature_store.project}_patient_features"
    with sqlite3.connect(e2i_home / "feast" / "online_store.db") as db:
        keys = [r[0] for r in db.execute(f"SELECT DISTINCT entity_key FROM {table}")]
        db.executemany(f"DELETE FROM {table} WHERE entity_key = ?", [(k,) for k in keys[keep:]])


def test_serving_is_refused_while_the_online_store_is_not_fresh(
    settings, instance, e2i_home, monkeypatch
):
    defs = definitions(settings, [online_consumer])
    chain = run(defs, instance, selection=FEATURE_CHAIN)
    assert chain.success, failed_steps(chain)
    assert run(defs, instance, selection=["online_consumer"]).success  # control

    _break_online(e2i_home, settings, keep=1)
    checked = run(defs, instance, selection=dg.AssetSelection.checks_for_assets("online_features"))
    freshness = evaluations(checked)["online_features.freshness"]
    assert freshness.passed is False and freshness.severity == dg.AssetCheckSeverity.ERROR
    view = freshness.metadata["views"].data["patient_features"]
    assert view["status"] == "stale" and view["missing"] == view["sampled"] - 1
    assert "tolerated" in view["reason"]
    for asset in ("online_consumer", "patient_risk_scores"):
        message = _refusal(run(defs, instance, selection=[asset]))
        assert "gate freshness on online_features" in message, asset


def test_time_based_verdicts_expire_and_the_sensor_records_what_is_true(instance, e2i_home):
    settings = load_settings()  # the default limits: stale after two hours
    defs = definitions(settings, [online_consumer])
    chain = run(defs, instance, selection=FEATURE_CHAIN)
    assert chain.success, failed_steps(chain)
    freshness = evaluations(chain)["online_features.freshness"]
    assert freshness.passed
    expires = freshness.metadata["e2i/expires_at"].value
    assert expires == freshness.metadata["dagster/fresh_until_timestamp"].value
    assert 3600 < expires - time.time() <= 2 * 3600
    assert run(defs, instance, selection=["online_consumer"]).success  # before expiry

    # The clock moves past the verdict's horizon, with nothing re-materialized.
    with time_machine.travel(expires + 1, tick=True):
        _after_the_freshness_horizon(defs, instance, settings, chain.run_id, expires)


def _after_the_freshness_horizon(defs, instance, settings, chain_run: str, expires: float):
    message = _refusal(run(defs, instance, selection=["online_consumer"]))
    assert "gate freshness on online_features: its verdict of" in message
    assert "expired at " + datetime.fromtimestamp(expires, UTC).isoformat(timespec="seconds") in (
        message
    )
    assert (
        "freshness: its verdict" in _decisions(defs, instance, settings)["online_features"].reason
    )

    # The sensor measures and records: the UI's latest result is what is true now.
    sensor = defs.resolve_sensor_def("feature_freshness_sensor")
    with dg.build_sensor_context(instance=instance, resources=defs.resources) as context:
        tick = sensor.evaluate_tick(context)
    # The data aged with the clock: source-stale, so no refresh (it could not help).
    assert not tick.run_requests
    assert "source-stale" in tick.skip_message
    for event in tick.asset_events:
        instance.report_runless_asset_event(event)  # as the daemon does with a tick's events
    key = dg.AssetCheckKey(dg.AssetKey("online_features"), "freshness")
    record = instance.get_latest_asset_check_evaluation_record(key)
    assert record.evaluation.passed is False
    assert record.evaluation.metadata["evaluated_by"].value == "feature_freshness_sensor"
    assert record.evaluation.target_materialization_data.run_id == chain_run


def test_a_recency_verdict_expires(instance, e2i_home, config_copy, monkeypatch):
    # Journeys whose newest source time is an hour inside a one-day recency limit.
    newest = datetime.now(UTC).replace(tzinfo=None) - timedelta(days=1) + timedelta(hours=1)
    monkeypatch.setenv("E2I_ANCHOR", (newest + timedelta(seconds=60)).isoformat())
    edit_yaml(
        config_copy, "quality", ("tables", "patient_journeys", "recency", "max_source_age_days"), 1
    )
    defs = definitions(load_settings(), [journey_consumer])
    result = run(defs, instance, selection=table_selection("patient_journeys"))
    assert result.success, failed_steps(result)
    ge = evaluations(result)["patient_journeys.expectations"]
    expires = ge.metadata["e2i/expires_at"].value
    assert 3500 < expires - time.time() <= 3600
    assert run(defs, instance, selection=["journey_consumer"]).success
    with time_machine.travel(expires + 1, tick=True):
        assert "expired at" in _refusal(run(defs, instance, selection=["journey_consumer"]))


def _break_value(df, table: str, family: str):
    """One bad value of a rule family in a contract table (a copy)."""
    from e2i_platform.contract import table as contract_table

    spec = contract_table(table)
    df = df.copy()
    row = df.index[1]
    if family == "duplicate_key":
        df.loc[row, spec.primary_key] = df.loc[df.index[0], spec.primary_key]
    elif family == "fraction_in_int":
        col = next(c.name for c in spec.columns if c.dtype == "int")
        df[col] = df[col].astype("float64")
        df.loc[row, col] = df.loc[row, col] + 0.5  # typing would silently drop the .5
    elif family == "future_time":
        df.loc[row, spec.event_time] = pd.Timestamp("2099-01-01")
    elif family == "infinite":
        col = next(c.name for c in spec.columns if c.dtype == "float")
        df.loc[row, col] = float("inf")
    else:
        raise AssertionError(family)
    return df


CASES = [(t, "duplicate_key") for t in INPUT_TABLES] + [
    ("treatment_events", family) for family in ("fraction_in_int", "future_time", "infinite")
]


@pytest.mark.parametrize(("table", "family"), CASES)
def test_a_rejected_table_keeps_its_last_good_value(
    settings, instance, generated, e2i_home, table, family
):
    """Bad landed values of any table are blocked with evidence; the raw value is staged
    (kept aside) but the published raw and validated tables stay byte-identical."""
    defs = definitions(settings)
    assert run(defs, instance, selection=table_selection(table)).success
    raw = e2i_home / "warehouse" / f"raw_{table}.parquet"
    validated = e2i_home / "warehouse" / f"{table}.parquet"
    before = raw.read_bytes(), validated.read_bytes()
    bad = _break_value(generated.table(table), table, family)
    write_landing(e2i_home, table, bad)
    result = run(defs, instance, selection=table_selection(table))
    gate = evaluations(result)[f"raw_{table}.schema"]
    assert gate.passed is False and gate.severity == dg.AssetCheckSeverity.ERROR
    assert gate.metadata["failing_rows"].value >= 1, gate.description
    assert (raw.read_bytes(), validated.read_bytes()) == before
    assert pd.read_parquet(gate.metadata["rejected_value"].value).shape == bad.shape
    assert table not in materialized(result)


def test_a_published_file_changed_by_hand_is_not_read(settings, instance, e2i_home):
    defs = definitions(settings)
    inputs = table_selection("patient_journeys") | table_selection("treatment_events")
    assert run(defs, instance, selection=inputs).success
    published = e2i_home / "warehouse" / "patient_journeys.parquet"
    journeys = pd.read_parquet(published)
    journeys.head(10).to_parquet(published, index=False)  # another actor's edit
    message = _refusal(run(defs, instance, selection=["patient_features"]))
    assert "patient_journeys: the published file" in message
    assert "was changed after it was published" in message


def test_a_pass_that_no_longer_holds_does_not_publish(instance, generated, e2i_home, config_copy):
    """expectations passed run R's journeys, references_resolve failed them. After the
    parent is fixed and expectations' thresholds changed, re-executing references_resolve
    alone passes R, but R is not published on expectations' outdated pass."""
    write_landing(e2i_home, "hcp_profiles", generated.table("hcp_profiles").head(20))
    defs = definitions(load_settings())
    first = run(defs, instance, selection=table_selection("patient_journeys"))
    assert evaluations(first)["patient_journeys.expectations"].passed
    assert evaluations(first)["patient_journeys.references_resolve"].passed is False
    published = e2i_home / "warehouse" / "patient_journeys.parquet"
    assert not published.exists()

    (e2i_home / "landing" / "hcp_profiles.parquet").unlink()  # the generator's full set
    edit_yaml(
        config_copy,
        "quality",
        ("tables", "patient_journeys", "distributions", "engagement_score", "mean", "min"),
        3.5,
    )
    defs = definitions(load_settings())
    assert run(defs, instance, selection=table_selection("hcp_profiles")).success
    refs = dg.AssetCheckKey(dg.AssetKey("patient_journeys"), "references_resolve")
    again = run(defs, instance, selection=dg.AssetSelection.checks(refs))
    check = evaluations(again)["patient_journeys.references_resolve"]
    assert check.passed
    assert "expectations (it was judged under configuration" in check.metadata["published"].value
    assert not published.exists()


def test_a_value_written_again_after_its_checks_is_not_published(instance, generated, e2i_home):
    """A step attempt delivered twice (a Celery redelivery) writes run R's staged value
    again after expectations passed it. references_resolve then passes the new bytes,
    but the two passes judged different bytes: nothing is published, and publication
    itself refuses bytes its checks did not judge."""
    from e2i_platform.resources.publication import Publications

    write_landing(e2i_home, "hcp_profiles", generated.table("hcp_profiles").head(20))
    defs = definitions(load_settings())
    first = run(defs, instance, selection=table_selection("patient_journeys"))
    expectations = evaluations(first)["patient_journeys.expectations"]
    assert expectations.passed
    assert evaluations(first)["patient_journeys.references_resolve"].passed is False
    pubs = Publications.for_settings(load_settings())
    staged = pubs.staged_path("patient_journeys", first.run_id, "parquet")
    judged = expectations.metadata["judged_sha256"].value
    journeys = pd.read_parquet(staged)
    # The second attempt's value: same run, same rows in another order (other bytes).
    pubs.stage(
        "patient_journeys",
        first.run_id,
        "parquet",
        lambda p: journeys.iloc[::-1].to_parquet(p, index=False),
    )

    (e2i_home / "landing" / "hcp_profiles.parquet").unlink()  # the generator's full set
    assert run(defs, instance, selection=table_selection("hcp_profiles")).success
    refs = dg.AssetCheckKey(dg.AssetKey("patient_journeys"), "references_resolve")
    again = evaluations(run(defs, instance, selection=dg.AssetSelection.checks(refs)))
    check = again["patient_journeys.references_resolve"]
    assert check.passed
    assert check.metadata["judged_sha256"].value != judged
    assert "the passes judged different bytes" in check.metadata["published"].value
    assert not (e2i_home / "warehouse" / "patient_journeys.parquet").exists()

    # Publication checks the bytes itself, under the lock, whoever asks.
    with pytest.raises(ValueError, match="is not the value its checks passed"):
        pubs.publish("patient_journeys", first.run_id, "parquet", ["expectations"], judged)
    assert not (e2i_home / "warehouse" / "patient_journeys.parquet").exists()
    assert staged.exists()  # the value stays staged, for whoever looks into it
