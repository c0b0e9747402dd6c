"""The production profile: Dagster run/event storage in the machine's PostgreSQL.

Materializes a gated table with its checks on an instance built from the prod
dagster.yaml template, reads the check evaluation back, and shows the cross-run
guard works on that storage too."""

import dagster as dg
import psycopg2
import pytest

from e2i_platform.ops.instance import prepare_instance
from e2i_platform.settings import load_settings

from support import definitions, evaluations, failed_steps, run, table_selection, write_landing


@pytest.fixture
def prod_instance(e2i_home, psycopg2_url, monkeypatch, tmp_path):
    monkeypatch.setenv("E2I_ENV", "prod")
    # Storage is what these tests are about: prod's `landing` source policy (tested in
    # test_gate_chain) would refuse the generated tables they run on.
    monkeypatch.setenv("E2I_SOURCE_POLICY", "auto")
    monkeypatch.setenv("DAGSTER_PG_URL", psycopg2_url)
    settings = load_settings()
    assert settings.platform.instance.storage == "postgres"
    home = prepare_instance(settings, tmp_path / "dagster_home")
    # The rendered file refers to the environment; the secret is not on disk.
    assert psycopg2_url not in (home / "dagster.yaml").read_text()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        yield settings, instance


def test_checks_are_stored_and_read_back_from_postgres(prod_instance, postgres_database):
    settings, instance = prod_instance
    result = run(definitions(settings), instance, selection=table_selection("business_metrics"))
    assert result.success, failed_steps(result)

    record = instance.get_latest_asset_check_evaluation_record(
        dg.AssetCheckKey(dg.AssetKey("business_metrics"), "expectations")
    )
    assert record is not None and record.run_id == result.run_id
    assert record.evaluation.passed is True
    assert record.evaluation.metadata["expectations_evaluated"].value >= 5

    with psycopg2.connect(postgres_database) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM runs WHERE run_id = %s", (result.run_id,))
        assert cur.fetchone()[0] == 1
        cur.execute(
            "SELECT count(*) FROM asset_check_executions WHERE run_id = %s", (result.run_id,)
        )
        assert cur.fetchone()[0] == 2  # raw schema + expectations


def test_cross_run_guard_on_postgres_storage(prod_instance, e2i_home, generated):
    settings, instance = prod_instance
    broken = generated.table("causal_paths")
    broken.loc[broken.index[:4], "end_node"] = broken.loc[broken.index[:4], "start_node"]
    write_landing(e2i_home, "causal_paths", broken)
    defs = definitions(settings)
    first = run(defs, instance, selection=table_selection("causal_paths"))
    gate = evaluations(first)["raw_causal_paths.schema"]
    assert gate.passed is False
    assert gate.metadata["failure_counts"].data == {
        "start_node,end_node: start_node != end_node": 4
    }
    child = run(defs, instance, selection=["causal_paths"])
    assert not child.success
    assert "gate schema on raw_causal_paths" in failed_steps(child)["causal_paths"]
