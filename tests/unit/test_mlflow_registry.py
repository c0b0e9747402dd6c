"""Champion and challenger in MLflow, against real MLflow (a SQLite store per test): a
trained model is registered as the candidate (alias `challenger`), `champion` moves only
through a release, versions carry their role, gate verdicts, release and Dagster runs,
runs carry the Dagster run id, and the training set is the run's input dataset."""

import json

import dagster as dg
import pandas as pd
import pytest

from e2i_platform.lib.versions import frame_version
from e2i_platform.resources.mlflow import DAGSTER_RUN_TAG, MlflowResource
from e2i_platform.resources.mlflow_registry import (
    CHALLENGER_ALIAS,
    CHAMPION_ALIAS,
    GATE_SUMMARY_LIMIT,
    gate_tag,
)
from e2i_platform.resources.mlflow_tracking import CONTENT_HASH_TAG

# MLflow's own SQLAlchemy mapper setup, not ours.
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")

MODEL = "e2i_test_model"


@pytest.fixture
def tracking(tracking_db: str) -> MlflowResource:
    return MlflowResource(tracking_uri=tracking_db, experiment="e2i", registered_model=MODEL)


def client(resource: MlflowResource):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=resource.tracking_uri, registry_uri=resource.tracking_uri)


def candidate(tracking: MlflowResource, tags: dict | None = None) -> tuple[str, str]:
    """A run and a logged model (no booster: the registry does not look inside), registered
    as the candidate: (run id, version)."""
    run = tracking.start_run("train", {}, {})
    logged = client(tracking).create_logged_model(
        experiment_id=tracking.ensure_reachable(), name="model", source_run_id=run
    )
    version = tracking.register_candidate(f"models:/{logged.model_id}", run, tags or {})
    tracking.end_run(run)
    return run, version


def tags_of(tracking: MlflowResource, version: str) -> dict[str, str]:
    return dict(client(tracking).get_model_version(MODEL, version).tags)


def test_a_trained_model_is_registered_as_the_challenger_with_its_tags(tracking):
    run, version = candidate(tracking, {"e2i.training_set.content_hash": "abc123"})

    assert version == "1"
    assert tracking.aliases() == {CHALLENGER_ALIAS: "1"}
    assert tracking.alias_version(CHAMPION_ALIAS) is None  # registering never crowns
    tags = tags_of(tracking, version)
    assert tags["e2i.role"] == "candidate"
    assert tags["e2i.training_set.content_hash"] == "abc123"
    assert DAGSTER_RUN_TAG not in tags  # outside a Dagster run there is none to name
    assert client(tracking).get_model_version(MODEL, version).run_id == run

    _, second = candidate(tracking)
    assert tracking.aliases() == {CHALLENGER_ALIAS: "2"}  # the newest candidate
    tracking.set_version_tags(second, {"e2i.model_sha256": "f" * 64})
    assert tracking.version_tags(second)["e2i.model_sha256"] == "f" * 64
    assert tracking.version_tags("99") is None


def test_the_training_set_is_the_runs_input_dataset_by_our_content_hash(tracking, monkeypatch):
    # The schema is inferred from the first rows; the size is the whole frame's.
    monkeypatch.setattr("e2i_platform.resources.mlflow_tracking.SCHEMA_SAMPLE_ROWS", 2)
    frame = pd.DataFrame(
        {
            "age": [30.0, 41.0, 52.0, None],
            "region": pd.Categorical(["west", "south", "west", "midwest"]),
            "discontinued": [0, 1, 0, 1],
        }
    )
    content_hash = frame_version(frame)
    run = tracking.start_run("train", {}, {})
    tracking.log_dataset(
        run, frame, "training_dataset", content_hash, "training", targets="discontinued"
    )
    tracking.end_run(run)

    found = client(tracking).get_run(run)
    (given,) = found.inputs.dataset_inputs
    assert given.dataset.name == "training_dataset"
    assert given.dataset.digest == content_hash
    assert given.dataset.source_type == "code"
    assert CONTENT_HASH_TAG in given.dataset.source and content_hash in given.dataset.source
    assert json.loads(given.dataset.profile) == {"num_rows": 4, "num_elements": 12}
    columns = json.loads(given.dataset.schema)["mlflow_colspec"]
    assert [c["name"] for c in columns] == ["age", "region", "discontinued"]
    assert {t.key: t.value for t in given.tags} == {
        "mlflow.data.context": "training",
        CONTENT_HASH_TAG: content_hash,
    }
    # Described, never copied: the run has no artifact.
    assert client(tracking).list_artifacts(run) == []


def test_runs_and_versions_made_in_a_dagster_run_carry_its_id(tracking):
    @dg.asset
    def tracked(mlflow: MlflowResource) -> dict:
        parent = mlflow.start_study_run("study", {"n_trials": 1}, {})
        trial = mlflow.log_trial(parent, 0, {"x": 1}, [(0, 0.5)], {"valid_auc": 0.5}, "COMPLETE")
        mlflow.end_run(parent)
        run, version = candidate(mlflow)
        return {"runs": [parent, trial, run], "version": version, "seen": mlflow.dagster_run_id}

    with dg.instance_for_test() as instance:
        result = dg.materialize_to_memory(
            [tracked], resources={"mlflow": tracking}, instance=instance
        )
    assert result.success
    out = result.output_for_node("tracked")
    assert out["seen"] == result.run_id
    for run in out["runs"]:
        assert client(tracking).get_run(run).data.tags[DAGSTER_RUN_TAG] == result.run_id
    assert tags_of(tracking, out["version"])[DAGSTER_RUN_TAG] == result.run_id

    # Initialized outside a run (no run id): nothing to tag, and nothing made up.
    tracking.setup_for_execution(dg.build_init_resource_context())
    assert tracking.dagster_run_id is None
    outside = tracking.start_run("outside", {}, {})
    assert DAGSTER_RUN_TAG not in client(tracking).get_run(outside).data.tags


def test_champion_moves_only_through_a_release_and_carries_its_evidence(tracking):
    from e2i_platform.promotion.release import move_alias

    _, first = candidate(tracking)
    gates = {
        f"model_evaluation.{g}": {"passed": True, "summary": f"{g} ok"}
        for g in ("quality_gate", "calibration_gate", "latency_gate", "fairness_gate", "cost_gate")
    }
    gates["raw_patients.schema"] = {"passed": True, "summary": "a data gate, not the model's"}
    moved = move_alias(tracking, first, "20261206T000000000000Z-promotion", "run-a", gates)

    assert moved["from_version"] is None and moved["to_version"] == first
    assert moved["challenger"] == f"removed (was version {first})"
    assert tracking.aliases() == {CHAMPION_ALIAS: first}
    tags = tags_of(tracking, first)
    assert tags["e2i.role"] == "champion"
    assert tags["e2i.release_id"] == "20261206T000000000000Z-promotion"
    assert tags["e2i.release_kind"] == "promotion"
    assert tags["e2i.release_dagster_run_id"] == "run-a"
    assert {k: v for k, v in tags.items() if k.startswith("e2i.gate.")} == {
        f"e2i.gate.{g}": "passed" for g in (n.split(".")[1] for n in gates if "model_" in n)
    }

    # A second candidate waits as challenger; the champion does not move with it.
    _, second = candidate(tracking)
    assert tracking.aliases() == {CHALLENGER_ALIAS: second, CHAMPION_ALIAS: first}
    move_alias(tracking, second, "20261206T000000000001Z-promotion", "run-b", gates)
    assert tracking.aliases() == {CHAMPION_ALIAS: second}
    assert tags_of(tracking, first)["e2i.role"] == "former_champion"
    assert tags_of(tracking, first)["e2i.replaced_by_release"] == (
        "20261206T000000000001Z-promotion"
    )

    # A rollback restores the first: tagged with the rollback's release and run.
    back = move_alias(tracking, first, "20261206T000000000002Z-rollback", "run-c")
    assert back["from_version"] == second and back["challenger"] == "none"
    assert tracking.aliases() == {CHAMPION_ALIAS: first}
    tags = tags_of(tracking, first)
    assert (tags["e2i.role"], tags["e2i.release_id"], tags["e2i.release_kind"]) == (
        "champion",
        "20261206T000000000002Z-rollback",
        "rollback",
    )
    assert tags["e2i.release_dagster_run_id"] == "run-c"
    assert tags["e2i.gate.quality_gate"] == "passed"  # from its promotion, kept


def test_a_reused_model_takes_challenger_back_unless_it_is_the_champion(tracking):
    _, first = candidate(tracking)
    _, second = candidate(tracking)
    record = {"registered_model": MODEL, "model_version": first}

    kept = tracking.keep_candidate(record)
    assert kept == {
        "alias": CHALLENGER_ALIAS,
        "version": first,
        "action": f"moved to the reused version from {second}",
    }
    assert tracking.alias_version(CHALLENGER_ALIAS) == first
    assert tracking.keep_candidate(record)["action"] == "kept on the reused version"

    tracking.set_alias(CHAMPION_ALIAS, second)
    as_champion = tracking.keep_candidate({"registered_model": MODEL, "model_version": second})
    assert as_champion["action"] == f"not set: version {second} is the champion"
    assert tracking.alias_version(CHALLENGER_ALIAS) == first

    assert tracking.keep_candidate({"tracking": "off"})["action"] == (
        "not set: the reused model was trained with tracking off"
    )
    elsewhere = tracking.keep_candidate({"registered_model": "other", "model_version": "1"})
    assert elsewhere["action"] == f"not set: the reused model was registered as other, not {MODEL}"
    missing = tracking.keep_candidate({"registered_model": MODEL, "model_version": "42"})
    assert missing["action"] == "not set: version 42 is not in the registry"


def test_gate_tags_are_compact():
    assert gate_tag("quality_gate", True, "whatever") == ("e2i.gate.quality_gate", "passed")
    key, value = gate_tag("cost_gate", False, "cost not within\n its limits: " + "x" * 1000)
    assert key == "e2i.gate.cost_gate"
    assert value.startswith("failed: cost not within its limits: xxx")
    assert len(value) <= len("failed: ") + GATE_SUMMARY_LIMIT


class Stand(dg.Config):
    version: str
    roc_auc: float


@dg.asset(name="model_evaluation")
def standin_model_evaluation(config: Stand) -> dict:
    return {
        "test_rows": 100,
        "roc_auc": config.roc_auc,
        "brier": 0.0,
        "champion": {"exists": False},
        "model": {"mlflow": {"registered_model": MODEL, "model_version": config.version}},
    }


def test_each_gate_tags_the_evaluated_version_with_its_verdict(tracking, tmp_path, monkeypatch):
    from e2i_platform.promotion.checks import calibration_gate, quality_gate
    from e2i_platform.resources.config import ConfigResource
    from e2i_platform.settings.loader import REPO_ROOT

    monkeypatch.setenv("E2I_HOME", str(tmp_path / "e2i"))
    for key in ("E2I_ENV", "E2I_CONFIG_DIR"):
        monkeypatch.delenv(key, raising=False)
    _, version = candidate(tracking)
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [standin_model_evaluation, quality_gate, calibration_gate],
            resources={
                "e2i_config": ConfigResource(config_dir=str(REPO_ROOT / "config"), env="local"),
                "mlflow": tracking,
            },
            instance=instance,
            run_config={
                "ops": {"model_evaluation": {"config": {"version": version, "roc_auc": 0.1}}}
            },
            raise_on_error=False,
        )
    verdicts = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert verdicts["quality_gate"].passed is False
    tags = tags_of(tracking, version)
    assert tags["e2i.gate.quality_gate"] == "failed: " + verdicts["quality_gate"].description
    assert tags["e2i.gate.calibration_gate"] == "passed"
    # The failed candidate keeps `challenger`; nothing made it champion.
    assert tracking.aliases() == {CHALLENGER_ALIAS: version}


def test_a_release_that_fails_to_publish_puts_the_aliases_back(tracking, tmp_path, monkeypatch):
    """The alias moves before the release is written: when writing fails (here its
    report), champion and challenger go back, so the registry never names a champion
    that releases/CURRENT does not."""
    from e2i_platform.lib.releases import current_release_id
    from e2i_platform.promotion.release import new_release_id, promote

    def manifest(version: str) -> dict:
        return {
            "release_id": new_release_id("promotion"),
            "kind": "promotion",
            "created_at": "now",
            "model": {
                "model_file": "m",
                "model_sha256": f"sha-{version}",
                "mlflow": {"model_version": version},
            },
            "gates": {"model_evaluation.quality_gate": {"passed": True, "summary": "ok"}},
            "dagster_run_id": "run-x",
        }

    _, first = candidate(tracking)
    released = promote(tmp_path, tracking, manifest(first))
    _, second = candidate(tracking)
    assert tracking.aliases() == {CHAMPION_ALIAS: first, CHALLENGER_ALIAS: second}

    def broken(home, manifest):
        raise OSError("disk full")

    monkeypatch.setattr("e2i_platform.promotion.release_report.release_report", broken)
    failing = manifest(second)
    with pytest.raises(OSError, match="disk full"):
        promote(tmp_path, tracking, failing)
    assert tracking.aliases() == {CHAMPION_ALIAS: first, CHALLENGER_ALIAS: second}
    assert current_release_id(tmp_path) == released["release_id"]
    assert tags_of(tracking, first)["e2i.role"] == "champion"
    assert tags_of(tracking, second)["e2i.role"] == "candidate"
    assert tags_of(tracking, second)["e2i.release_failed"] == failing["release_id"]


def test_a_failure_while_tagging_leaves_champion_where_it_was(tracking, monkeypatch):
    _, first = candidate(tracking)
    tracking.move_champion(first, {"e2i.release_id": "r1"})
    _, second = candidate(tracking)

    def refused(self, version, tags):
        raise RuntimeError("registry refused the tags")

    monkeypatch.setattr(type(tracking), "set_version_tags", refused)
    with pytest.raises(RuntimeError, match="refused"):
        tracking.move_champion(second, {"e2i.release_id": "r2"})
    assert tracking.alias_version(CHAMPION_ALIAS) == first
