"""The `make run` planner: which assets run, and why in words, and which are reused.

One real run of the hcp_profiles, patient_journeys and causal_paths chains (raw tables,
validated tables, their Pandera, GE and reference gates) on a real Dagster instance,
then raw_causal_paths materialized again from a landing file. Each test asks the
planner about that state itself, under other sources, configurations, forced assets
or run modes (a test that changes a file puts it back).

The patient_journeys recency expectation is configured to expire about eight minutes
after the data's newest event: within the planner's margin (`EXPIRY_MARGIN_S`), so its
verdict is re-evaluated rather than reused; hcp_profiles' (30 days) is reused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
from conftest import use_home

from e2i_platform.ops.reuse import (
    EXPIRY_MARGIN_S,
    Decision,
    plan_order,
    plan_run,
    report_reuse,
    run_mode_forces,
)

from support import definitions, edit_yaml, failed_steps, run, table_selection, write_landing

# The sizes of tests/conftest.py's fixtures, and the variables that may point at shared
# servers (a test never writes there).
SMALL = {"E2I_PATIENTS": "300", "E2I_HCPS": "40", "E2I_SEED": "11"}
CHAIN = ("raw_hcp_profiles", "hcp_profiles", "raw_patient_journeys", "patient_journeys")
FORCED = "forced by the test"


@dataclass
class World:
    home: Path
    config: Path
    settings: object
    defs: dg.Definitions
    instance: dg.DagsterInstance
    source: object
    runs: dict  # asset -> run id of its latest materialization after the chains' run
    versions: dict  # asset -> data version after the chains' run
    other_landing: Path  # a landing file for hcp_profiles elsewhere

    def plan(self, source=None, forced=None, defs=None, settings=None) -> dict[str, Decision]:
        decisions = plan_run(
            defs or self.defs,
            self.instance,
            source or self.source,
            settings or self.settings,
            forced,
        )
        return {d.asset: d for d in decisions}

    def source_with(self, **changes):
        from e2i_platform.ingest.sources import SourceResource

        return SourceResource(**{**self.source.__dict__, **changes})


def _latest(instance, asset: str):
    return instance.get_latest_materialization_event(dg.AssetKey(asset))


def _plan(defs, instance, source, settings, forced=None) -> dict[str, Decision]:
    return {d.asset: d for d in plan_run(defs, instance, source, settings, forced)}


def _version(instance, asset: str) -> str:
    return _latest(instance, asset).asset_materialization.tags["dagster/data_version"]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    import shutil

    from e2i_platform.settings import load_settings
    from e2i_platform.settings.loader import REPO_ROOT

    base = tmp_path_factory.mktemp("reuse")
    home, config = base / "e2i", base / "config"
    home.mkdir()
    shutil.copytree(REPO_ROOT / "config", config)
    # The generator's newest journey is a minute before the anchor: its recency verdict
    # expires 8 minutes after the anchor, within the planner's margin.
    expiry_days = (8 * 60 + 60) / 86400
    edit_yaml(
        config, "quality", ("tables", "patient_journeys", "recency", "max_source_age_days"),
        expiry_days,
    )  # fmt: skip
    with pytest.MonkeyPatch.context() as mp, dg.instance_for_test() as instance:
        use_home(mp, home, config, sizes=SMALL)
        settings = load_settings()
        defs = definitions(settings)
        source = defs.resources["source"]
        chains = table_selection("patient_journeys") | table_selection("causal_paths")
        done = run(defs, instance, selection=chains)
        assert done.success, failed_steps(done)
        assets = (*CHAIN, "raw_causal_paths", "causal_paths")
        runs = {a: _latest(instance, a).run_id for a in assets}
        versions = {a: _version(instance, a) for a in assets}
        # raw_causal_paths again, from a landing file, with its gate.
        write_landing(home, "causal_paths", source.load("causal_paths").frame)
        again = run(
            defs,
            instance,
            selection=dg.AssetSelection.assets("raw_causal_paths")
            | dg.AssetSelection.checks_for_assets("raw_causal_paths"),
        )
        assert again.success, failed_steps(again)
        other = write_landing(base / "other", "hcp_profiles", source.load("hcp_profiles").frame)
        yield World(home, config, settings, defs, instance, source, runs, versions, other)


def _reasons(plan: dict, assets=CHAIN) -> dict[str, str]:
    return {a: plan[a].reason for a in assets}


def _up_to_date(world: World, asset: str) -> str:
    return f"up to date: data version {world.versions[asset][:16]} from run {world.runs[asset][:8]}"


# ---------------------------------------------------------------- plan_order


def test_every_asset_is_planned_upstream_first_with_gate_reads_as_upstream(settings):
    graph = definitions(settings).resolve_asset_graph()
    keys = [k for k in graph.get_all_asset_keys() if graph.get(k).is_materializable]
    order = plan_order(graph, keys)
    assert sorted(order) == sorted(keys)
    at = {k: i for i, k in enumerate(order)}
    for key in keys:
        for parent in graph.get(key).parent_keys:
            assert at[parent] < at[key], (parent, key)
    # The references gate of patient_journeys reads hcp_profiles: judged again after it.
    names = [k.to_user_string() for k in order]
    assert names.index("hcp_profiles") < names.index("patient_journeys")
    # Ready assets in name order: the raw tables first.
    raw = sorted(n for n in names if n.startswith("raw_"))
    assert names[: len(raw)] == raw
    # Only the keys asked for, and gate reads outside them do not count.
    pair = [dg.AssetKey("patient_journeys"), dg.AssetKey("hcp_profiles")]
    assert plan_order(graph, pair) == [dg.AssetKey("hcp_profiles"), dg.AssetKey("patient_journeys")]
    assert plan_order(graph, [dg.AssetKey("patient_journeys")]) == [dg.AssetKey("patient_journeys")]
    assert plan_order(graph, []) == []


def test_a_gate_reading_its_own_downstream_is_a_cycle():
    @dg.asset
    def a():
        return 1

    @dg.asset(deps=[a])
    def b():
        return 2

    @dg.asset
    def c():
        return 3

    @dg.asset_check(asset=a, blocking=True, additional_deps=[b])
    def a_reads_b():
        return dg.AssetCheckResult(passed=True)

    graph = dg.Definitions(assets=[a, b, c], asset_checks=[a_reads_b]).resolve_asset_graph()
    keys = [dg.AssetKey(n) for n in "abc"]
    with pytest.raises(ValueError, match=r"^cycle among \[") as cycle:
        plan_order(graph, keys)
    # The assets left in the cycle are named; c, ready first, is not.
    assert "'a'" in str(cycle.value) and "'b'" in str(cycle.value)
    assert "'c'" not in str(cycle.value)

    # A non-blocking check's reads do not order anything.
    @dg.asset_check(asset=a, additional_deps=[b])
    def a_looks_at_b():
        return dg.AssetCheckResult(passed=True)

    graph = dg.Definitions(assets=[a, b, c], asset_checks=[a_looks_at_b]).resolve_asset_graph()
    assert plan_order(graph, keys) == [dg.AssetKey("a"), dg.AssetKey("c"), dg.AssetKey("b")]


# ---------------------------------------------------------------- run modes


def test_run_modes_force_what_reuse_would_silently_ignore():
    assert run_mode_forces("reuse_if_exists") == {}
    assert run_mode_forces("force_new") == {
        "hpo_study": "run_mode force_new",
        "trained_model": "run_mode force_new",
    }
    for mode in ("resume_if_incomplete", "continue_from_previous"):
        assert run_mode_forces(mode) == {"trained_model": f"run_mode {mode}"}


# ---------------------------------------------------------------- small graphs


def test_parents_outside_the_plan_are_passed_over(tmp_path):
    """An external asset (not materializable) upstream is not decided, and the planner
    goes on to the parents it does decide."""

    @dg.asset(code_version="1")
    def b():
        return 1

    @dg.asset(code_version="1", deps=["a_external", b])
    def c():
        return 2

    defs = dg.Definitions(assets=[dg.AssetSpec("a_external"), b, c])
    settings = type("Settings", (), {"home": tmp_path, "online_store": "sqlite"})()
    with dg.instance_for_test() as instance:
        assert dg.materialize([b, c], instance=instance).success
        plain = _plan(defs, instance, None, settings)
        assert [d.run for d in plain.values()] == [False, False]
        forced = _plan(defs, instance, None, settings, {"b": FORCED})
        assert (forced["b"].reason, forced["c"].reason) == (FORCED, "upstream b runs")
        assert "a_external" not in forced

        report_reuse(instance, [Decision("b", True, "runs"), plain["c"]], "make run test")
        (observed,) = instance.fetch_observations(dg.AssetKey("c"), limit=5).records
        meta = {k: v.value for k, v in observed.asset_observation.metadata.items()}
        assert meta == {
            "reused": True,
            "reused_by": "make run test",
            "data_version": plain["c"].data_version,
            "materialized_in_run": plain["c"].run_id,
        }
        assert observed.asset_observation.description == "reused by make run test"
        # A decision that runs is not reported as a reuse.
        assert not instance.fetch_observations(dg.AssetKey("b"), limit=5).records


def test_a_reuse_without_versions_is_recorded_with_empty_values():
    with dg.instance_for_test() as instance:
        report_reuse(instance, [Decision("x", False, "up to date")], "make run r1")
        (observed,) = instance.fetch_observations(dg.AssetKey("x"), limit=5).records
        meta = observed.asset_observation.metadata
        assert (meta["data_version"].value, meta["materialized_in_run"].value) == ("", "")


# ---------------------------------------------------------------- the reasons


def test_nothing_materialized_runs_everything(world, instance):
    empty = _plan(world.defs, instance, world.source, world.settings)  # a new instance
    graph = world.defs.resolve_asset_graph()
    order = [k.to_user_string() for k in plan_order(graph, graph.get_all_asset_keys())]
    assert list(empty) == order
    for decision in empty.values():
        assert (decision.run, decision.reason) == (True, "never materialized")
        assert decision.data_version is None and decision.run_id is None


def test_what_passed_its_gates_and_is_stored_is_reused(world):
    current = world.plan()
    for asset in ("raw_hcp_profiles", "hcp_profiles", "raw_patient_journeys"):
        decision = current[asset]
        assert decision.run is False
        assert decision.reason == _up_to_date(world, asset)
        assert decision.data_version == world.versions[asset]
        assert decision.run_id == world.runs[asset]
    assert world.versions["raw_hcp_profiles"].startswith("generator-")
    assert current["treatment_events"].reason == "never materialized"
    assert current["raw_treatment_events"].reason == "never materialized"


def test_a_verdict_expiring_within_the_margin_is_judged_again(world):
    assert EXPIRY_MARGIN_S > 8 * 60  # what the configured expiry above relies on
    decision = world.plan()["patient_journeys"]
    assert decision.run is True
    assert decision.reason.startswith("gate expectations: its verdict of "), decision.reason
    assert " expired at " in decision.reason


def test_an_upstream_that_runs_runs_its_downstream(world):
    forced = world.plan(forced={"raw_hcp_profiles": FORCED})
    assert _reasons(forced) == {
        "raw_hcp_profiles": FORCED,
        "hcp_profiles": "upstream raw_hcp_profiles runs",
        "raw_patient_journeys": _up_to_date(world, "raw_patient_journeys"),
        "patient_journeys": "gate references_resolve reads hcp_profiles, which runs",
    }
    assert forced["raw_hcp_profiles"].data_version is None


def test_a_gate_that_reads_an_asset_that_runs_is_judged_again(world):
    forced = world.plan(forced={"hcp_profiles": FORCED})
    assert forced["raw_hcp_profiles"].run is False
    assert forced["hcp_profiles"].reason == FORCED
    assert forced["patient_journeys"].reason == (
        "gate references_resolve reads hcp_profiles, which runs"
    )
    assert forced["treatment_events"].reason == "never materialized"


def test_a_generator_change_is_named(world):
    more = world.plan(source=world.source_with(hcps=world.source.hcps + 1))
    hcps = int(SMALL["E2I_HCPS"])
    for raw in ("raw_hcp_profiles", "raw_patient_journeys"):
        assert more[raw].reason == f"generator hcps {hcps} -> {hcps + 1}"
    assert more["hcp_profiles"].reason == "upstream raw_hcp_profiles runs"


def test_a_landing_file_that_appeared_is_named_with_its_hash(world):
    from e2i_platform.lib.versions import sha256_file

    landed = world.plan(source=world.source_with(landing_dir=str(world.other_landing.parent)))
    sha = sha256_file(world.other_landing)
    assert landed["raw_hcp_profiles"].reason == (
        f"landing file appeared: {world.other_landing} (sha {sha[:12]}…)"
    )
    assert landed["raw_patient_journeys"].run is False  # its source did not change


def test_a_landing_file_that_is_gone_is_named(world, tmp_path):
    gone = world.plan(source=world.source_with(landing_dir=str(tmp_path)))["raw_causal_paths"]
    landing = world.home / "landing" / "causal_paths.parquet"
    assert gone.reason == f"landing file {landing} is gone: the generator supplies the table"


def test_a_configuration_change_reruns_what_it_concerns(world):
    from e2i_platform.settings import load_settings

    tolerance = world.settings.quality.future_tolerance_minutes
    edit_yaml(world.config, "quality", ("future_tolerance_minutes",), tolerance + 1)
    try:
        changed = load_settings()
        reconfigured = world.plan(defs=definitions(changed), settings=changed)
    finally:
        edit_yaml(world.config, "quality", ("future_tolerance_minutes",), tolerance)
    reason = "code or configuration changed since its last materialization"
    assert reconfigured["hcp_profiles"].reason == reason
    assert reconfigured["patient_journeys"].reason == reason
    # The raw tables' code is unchanged, but the tolerance their schema gate applies is.
    for raw in ("raw_hcp_profiles", "raw_patient_journeys"):
        why = reconfigured[raw].reason
        assert why.startswith("gate schema: it was judged under configuration "), why
        assert ", the configuration now is " in why


def test_a_stored_value_that_is_gone_is_not_reused(world):
    from e2i_platform.resources.publication import Publications

    published = Publications(world.home / "warehouse").published_path(
        "raw_patient_journeys", "parquet"
    )
    kept = published.read_bytes()
    published.unlink()
    try:
        plan = world.plan()
    finally:
        published.write_bytes(kept)
    gone = plan["raw_patient_journeys"]
    assert gone.run is True
    assert gone.reason.startswith("stored value: "), gone.reason
    assert "raw_patient_journeys.parquet" in gone.reason
    assert plan["raw_hcp_profiles"].run is False
    back = world.plan()["raw_patient_journeys"]
    assert back.reason == _up_to_date(world, "raw_patient_journeys")


def test_an_upstream_materialized_again_since_is_named_with_both_versions(world):
    plan = world.plan()
    raw = _latest(world.instance, "raw_causal_paths")
    new_version = _version(world.instance, "raw_causal_paths")
    assert new_version.startswith("landing-") and raw.run_id != world.runs["raw_causal_paths"]
    assert plan["raw_causal_paths"].reason == (
        f"up to date: data version {new_version[:16]} from run {raw.run_id[:8]}"
    )
    assert plan["causal_paths"].reason == (
        "upstream raw_causal_paths was materialized again since (it read data version "
        f"{world.versions['raw_causal_paths'][:12]}, now {new_version[:12]})"
    )


def test_a_forced_asset_runs_with_the_run_modes_reason(world):
    force_new = world.plan(forced=run_mode_forces("force_new"))
    resume = world.plan(forced=run_mode_forces("resume_if_incomplete"))
    assert (force_new["hpo_study"].run, force_new["hpo_study"].reason) == (
        True,
        "run_mode force_new",
    )
    assert force_new["trained_model"].reason == "run_mode force_new"
    assert resume["trained_model"].reason == "run_mode resume_if_incomplete"
    assert resume["hpo_study"].reason == "never materialized"
    assert world.plan(forced=run_mode_forces("reuse_if_exists")) == world.plan()


def test_a_decision_cannot_be_changed_once_made():
    import dataclasses

    decision = Decision("x", False, "up to date", "v1", "run1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        decision.run = True  # --all and --select make new decisions instead
