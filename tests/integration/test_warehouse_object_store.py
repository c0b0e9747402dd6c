"""The warehouse on an S3-compatible object store (a real moto server process) with its
locks in PostgreSQL: write-audit-publish keeps its rules there, the publication lock
holds across processes (and is released when its holder dies), and a Dagster run with
the IO managers on the store writes nothing under the home."""

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from s3_fixtures import ObjectStore

from e2i_platform.lib import store
from e2i_platform.lib.gate_checks import gate_check
from e2i_platform.lib.gate_results import gate_result
from e2i_platform.lib.gates import gated_asset
from e2i_platform.resources import ConfigResource
from e2i_platform.resources.publication import Publications, write_json
from e2i_platform.resources.storage import RecordIOManager, WarehouseIOManager

pytest_plugins = ["s3_fixtures"]  # object_store, s3_endpoint

TABLE = pd.DataFrame({"patient_id": ["p1", "p2", "p3"], "score": [0.1, 0.5, 0.9]})


def _key(path) -> str:
    """The object key of a path in the store's bucket."""
    return path.path.split("/", 1)[1]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- (a) write-audit-publish on the object store ------------------------------------


def test_stage_pass_publish_on_the_object_store(object_store: ObjectStore, tmp_path):
    pubs = Publications.of(tmp_path / "unused-home", object_store.url)
    assert pubs.remote and str(pubs.warehouse) == f"{object_store.url}/warehouse"

    staged = pubs.stage("scores", "run-1", "parquet", lambda p: TABLE.to_parquet(p, index=False))
    assert str(staged) == f"{object_store.url}/warehouse/.staged/scores/run-1.parquet"
    staged_bytes = object_store.get(_key(staged))
    assert pubs.value_path("scores", "run-1", "parquet") == staged
    assert pubs.record("scores") is None

    with pubs.lock("scores"):
        pubs.set_pass("scores", "run-1", "schema", {"judged_under": "v1"})
        assert pubs.passes("scores", "run-1") == {"schema": {"judged_under": "v1"}}
        record = pubs.publish("scores", "run-1", "parquet", ["schema"])

    # Published: the staged bytes under the published key, read back by boto3 and pandas.
    published = pubs.published_path("scores", "parquet")
    published_bytes = object_store.get("prefix/warehouse/scores.parquet")
    assert published_bytes == staged_bytes
    assert record["sha256"] == _sha256(published_bytes)
    assert record["path"] == "scores.parquet" and record["after_checks"] == ["schema"]
    stored_record = json.loads(object_store.get("prefix/warehouse/.published/scores.json"))
    assert stored_record == record
    pd.testing.assert_frame_equal(pd.read_parquet(io.BytesIO(published_bytes)), TABLE)
    with published.open("rb") as f:
        pd.testing.assert_frame_equal(pd.read_parquet(f, columns=["score"]), TABLE[["score"]])
    # The staged object and its passes are gone; the published one answers for run-1.
    assert not any(k.startswith("prefix/warehouse/.staged/") for k in object_store.object_keys())
    assert pubs.value_path("scores", "run-1", "parquet") == published
    assert pubs.published_run("scores") == "run-1"
    assert pubs.intact("scores", "parquet", record)
    assert pubs.problem("scores", "parquet", "run-1") is None

    # A JSON record goes the same way.
    release = {"release_id": "r1", "metrics": {"auc": 0.81}}
    pubs.stage("release", "run-1", "json", lambda p: write_json(release, p))
    with pubs.lock("release"):
        json_record = pubs.publish("release", "run-1", "json", [])
    json_bytes = object_store.get("prefix/warehouse/release.json")
    assert json.loads(json_bytes) == release
    assert json_record["sha256"] == _sha256(json_bytes)

    # A value its gate rejects stays staged: the published object is byte-identical.
    rejected = TABLE.assign(score=[9.0, 9.0, 9.0])
    pubs.stage("scores", "run-2", "parquet", lambda p: rejected.to_parquet(p, index=False))
    with pubs.lock("scores"):
        pubs.set_pass("scores", "run-2", "schema", None)
    assert object_store.get("prefix/warehouse/scores.parquet") == published_bytes
    assert json.loads(object_store.get("prefix/warehouse/.published/scores.json")) == record
    assert "prefix/warehouse/.staged/scores/run-2.parquet" in object_store.object_keys()
    assert pubs.problem("scores", "parquet", "run-1") is None
    assert "from run run-1, not run run-2" in pubs.problem("scores", "parquet", "run-2")
    # Bytes other than the ones its checks judged are not published (a second attempt
    # wrote run-2 again): the published object stays, no copy is left behind.
    with pubs.lock("scores"), pytest.raises(ValueError, match="not the value its checks"):
        pubs.publish("scores", "run-2", "parquet", ["schema"], _sha256(staged_bytes))
    assert object_store.get("prefix/warehouse/scores.parquet") == published_bytes
    assert not [k for k in object_store.object_keys() if k.endswith(".publishing")]

    # Bytes changed behind the record's back (a new ETag) are caught.
    object_store.client().put_object(
        Bucket=object_store.bucket, Key="prefix/warehouse/scores.parquet", Body=b"not parquet"
    )
    assert not pubs.intact("scores", "parquet", record)
    assert "changed after publication" in pubs.problem("scores", "parquet", "run-1")


def test_a_remote_store_without_a_lock_database_names_both_variables(monkeypatch, tmp_path):
    monkeypatch.delenv(store.LOCK_DB_ENV, raising=False)
    monkeypatch.delenv(store.LOCK_DB_FALLBACK_ENV, raising=False)
    pubs = Publications.of(tmp_path, "s3://any-bucket/prefix")
    missing = pytest.raises(store.LockDatabaseMissing, match="E2I_LOCK_DB_URL.*DAGSTER_PG_URL")
    with missing, pubs.lock("scores"):
        pass
    monkeypatch.setenv(store.LOCK_DB_FALLBACK_ENV, "postgresql+psycopg2://u@h:5432/d")
    assert store.lock_database_url() == "postgresql://u@h:5432/d"


def test_a_local_store_stays_under_the_home(tmp_path):
    pubs = Publications.of(tmp_path, None)
    assert not pubs.remote and pubs.warehouse == tmp_path / "warehouse"
    pubs.stage("t", "r", "json", lambda p: write_json({"a": 1}, p))
    with pubs.lock("t"):
        pubs.publish("t", "r", "json", [])
    assert json.loads((tmp_path / "warehouse" / "t.json").read_text()) == {"a": 1}


# --- (b) the publication lock across processes ---------------------------------------

CONTENDER = """
import json, sys, time
from pathlib import Path
from e2i_platform.lib.store import atomic_write
from e2i_platform.resources.publication import Publications

url, rounds, ready_dir, me = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
pubs = Publications.of("/nonexistent-home", url)
counter = pubs.warehouse / "counter.json"
(ready_dir / me).touch()
while len(list(ready_dir.iterdir())) < 2:  # both imported: start together
    time.sleep(0.01)
spans = []
for _ in range(rounds):
    with pubs.lock("scores"):
        start = time.time()
        n = json.loads(counter.read_text())["n"]   # read ...
        time.sleep(0.03)                           # ... (another writer would slip in here)
        atomic_write(counter, lambda p: p.write_text(json.dumps({"n": n + 1})))  # ... write
        spans.append([start, time.time()])
    time.sleep(0.005)
print(json.dumps(spans))
"""

HOLDER = """
import sys, time
from e2i_platform.resources.publication import Publications

with Publications.of("/nonexistent-home", sys.argv[1]).lock("scores"):
    print("locked", flush=True)
    time.sleep(600)
"""


def _python(code: str, *args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ),  # the store and lock database, as a deployment names them
        start_new_session=True,
        **kwargs,
    )


def test_processes_take_turns_on_the_publication_lock(object_store: ObjectStore, tmp_path):
    rounds = 12
    pubs = Publications.of(tmp_path, object_store.url)
    counter = pubs.warehouse / "counter.json"
    counter.write_text(json.dumps({"n": 0}))
    ready = tmp_path / "ready"
    ready.mkdir()
    procs = [_python(CONTENDER, object_store.url, str(rounds), str(ready), n) for n in "ab"]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]

    # No lost update: every read-modify-write of both processes counted.
    assert json.loads(counter.read_text()) == {"n": 2 * rounds}
    spans = sorted(
        (start, end, who)
        for who, out in zip("ab", outputs, strict=True)
        for start, end in json.loads(out)
    )
    assert len(spans) == 2 * rounds
    # Never two holders at once, and they did take turns (not one after the other).
    for (_, end, _), (start, _, _) in zip(spans[:-1], spans[1:], strict=True):
        assert end <= start
    assert sum(a[2] != b[2] for a, b in zip(spans[:-1], spans[1:], strict=True)) >= 2


def test_a_killed_holder_releases_the_lock(object_store: ObjectStore, tmp_path):
    pubs = Publications.of(tmp_path, object_store.url)
    holder = _python(HOLDER, object_store.url)
    try:
        assert holder.stdout.readline().strip() == "locked"
        busy = pytest.raises(store.LockTimeout, match=r"warehouse/\.staged/scores/\.lock")
        with busy, pubs.lock("scores", timeout=1):
            pass
        os.killpg(holder.pid, signal.SIGKILL)  # dies holding it: no unlock runs
        started = time.monotonic()
        with pubs.lock("scores", timeout=10):
            waited = time.monotonic() - started
    finally:
        if holder.poll() is None:
            os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()
    assert waited < 5


# --- (c) a Dagster run with the IO managers on the object store ----------------------


class Batch(dg.Config):
    bad_rows: int = 0


@dg.asset(io_manager_key="warehouse")
def scored_table(config: Batch) -> pd.DataFrame:
    return TABLE.assign(bad=[True] * config.bad_rows + [False] * (len(TABLE) - config.bad_rows))


@gate_check(asset="scored_table", name="schema")
def schema(scored_table: pd.DataFrame) -> dg.AssetCheckResult:
    bad = int(scored_table["bad"].sum())
    return gate_result(
        passed=bad == 0,
        blocking_failure=True,
        summary=f"{bad} bad rows",
        rows_checked=len(scored_table),
        failing_rows=bad,
    )


@gated_asset(ins={"scored_table": dg.AssetIn(metadata={"columns": ["score"]})})
def score_summary(scored_table: pd.DataFrame) -> dict:
    return {"rows": len(scored_table), "columns": list(scored_table.columns)}


def _files_under(root: Path) -> list[str]:
    return sorted(str(Path(d, f).relative_to(root)) for d, _, fs in os.walk(root) for f in fs)


def test_a_dagster_run_keeps_the_warehouse_in_the_object_store(
    object_store: ObjectStore, settings, e2i_home: Path, monkeypatch, tmp_path
):
    monkeypatch.setenv("E2I_STORE_URL", object_store.url)  # what the gate checks read
    config = ConfigResource(config_dir=str(settings.config_dir), env=settings.env)
    assert config.settings().platform.store.url == object_store.url
    assert _files_under(e2i_home) == []
    resources = {
        "e2i_config": config,
        "warehouse": WarehouseIOManager(
            home=str(e2i_home), e2i_config=config, store_url=object_store.url
        ),
        "io_manager": RecordIOManager(
            home=str(e2i_home), e2i_config=config, store_url=object_store.url
        ),
    }

    def run(bad_rows: int):
        return dg.materialize(
            [scored_table, schema, score_summary],
            instance=instance,
            resources=resources,
            run_config={"ops": {"scored_table": {"config": {"bad_rows": bad_rows}}}},
            raise_on_error=False,
        )

    with dg.instance_for_test() as instance:
        good = run(bad_rows=0)
        assert good.success
        assert good.output_for_node("score_summary") == {"rows": 3, "columns": ["score"]}
        table = object_store.get("prefix/warehouse/scored_table.parquet")
        table_record = json.loads(object_store.get("prefix/warehouse/.published/scored_table.json"))
        assert table_record["run_id"] == good.run_id
        assert table_record["after_checks"] == ["schema"]
        assert table_record["sha256"] == _sha256(table)
        summary = json.loads(object_store.get("prefix/warehouse/score_summary.json"))
        assert summary == {"rows": 3, "columns": ["score"]}
        event = instance.get_latest_materialization_event(dg.AssetKey("scored_table"))
        assert event.asset_materialization.metadata["staged_path"].value.startswith(
            f"{object_store.url}/warehouse/.staged/scored_table/"
        )

        bad = run(bad_rows=1)
        assert not bad.success
        (evaluation,) = bad.get_asset_check_evaluations()
        assert not evaluation.passed
        # The gate held: the downstream asset did not run, the published value is unchanged.
        assert "score_summary" not in {e.step_key for e in bad.all_events if e.is_step_start}
        latest = instance.get_latest_materialization_event(dg.AssetKey("score_summary"))
        assert latest.run_id == good.run_id
        assert object_store.get("prefix/warehouse/scored_table.parquet") == table
        assert (
            json.loads(object_store.get("prefix/warehouse/.published/scored_table.json"))
            == table_record
        )
        assert f"prefix/warehouse/.staged/scored_table/{bad.run_id}.parquet" in (
            object_store.object_keys()
        )

    # Everything durable went to the bucket: not one file under the home.
    assert _files_under(e2i_home) == []
