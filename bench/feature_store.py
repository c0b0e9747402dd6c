"""Feature-store benchmarks: part of `make bench`; alone: `python bench/feature_store.py`.

1. Materialization throughput (entities/s) of the platform path, `materialize_view`,
   for patient_features with N distinct entities into an EMPTY online store, SQLite and
   Redis. Baselines write the same payload with plain clients: Feast's exact Redis keys,
   hash fields and ValueProto bytes (read back from Redis after a platform run) with
   redis-py pipelines of 1,000 HSETs, and Feast's exact SQLite rows with sqlite3
   executemany. Feast's own `store.materialize` is a reference row. The platform rows
   also say where their time goes (never-backwards guard read, DataFrame -> protos, the
   store write, the registry record).
2. Online read latency p50/p99 through the `discontinuation_model_v1` feature service
   (4 views over patient, HCP and brand+region) for 1 and 100 entity rows, vs the same
   fields read and decoded with plain clients.
3. Freshness evaluation of all views (three clocks) with a 1,000-entity sample, with one
   snapshot offline and with the configured weekly history (snapshot_weeks, 78).

Redis: the run uses its own Feast project (`e2ibench<hex>`) and baseline key suffix of
the same length, and deletes exactly those keys at the end; nothing is ever flushed.
Registry, SQLite store and offline Parquet live in a temporary directory, removed after.
About 4 minutes with the default 50,000 entities and 3 repeats (2 vCPUs).
`--profile` instead prints a cProfile of one platform materialization into Redis.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
VIEW = "patient_features"  # the view whose materialization is measured
PIPELINE = 1_000  # commands per redis-py pipeline in the baseline
WARMUP = 20
# Entity rows per request -> timed requests (p99 of 100 samples is the 2nd worst: use 200).
ITERATIONS = {1: 300, 100: 200}
LATENCY_TARGET_MS = {1: 1.0, 100: 10.0}
THROUGHPUT_TARGET = 20_000  # entities/s, platform Redis materialization
FRESHNESS_SAMPLE = 1_000
FRESHNESS_TARGET_S = 1.0


# --- data ----------------------------------------------------------------------------


def synthetic_views(entities: int, snapshot: pd.Timestamp, seed: int = 0) -> dict:
    """One snapshot of every view: `entities` patients (patient and trigger features),
    one HCP per 50 patients, every brand x region. Values follow the contract's ranges;
    the dtypes are the platform's own (compute._stamp casts exactly as the assets do)."""
    from e2i_platform.contract import ENUMS
    from e2i_platform.features.compute import _stamp

    rng = np.random.default_rng(seed)
    n = entities
    patients = [f"PAT{i:08d}" for i in rng.choice(10**8, n, replace=False)]
    hcps = [f"HCP{i:08d}" for i in rng.choice(10**8, max(1, n // 50), replace=False)]
    events_total = rng.poisson(14, n)
    events_90d = rng.binomial(events_total, 0.3)
    adverse_90d = rng.binomial(events_90d, 0.06)
    patient = pd.DataFrame(
        {
            "patient_id": patients,
            "journeys_started": 1 + rng.poisson(0.4, n),
            "events_total": events_total,
            "events_90d": events_90d,
            "adverse_events_90d": adverse_90d,
            "adverse_event_rate": rng.beta(1, 15, n),
            "cost_90d": np.round(rng.gamma(2.0, 900.0, n) * (events_90d > 0), 2),
            "days_since_last_event": rng.exponential(25.0, n),
            "days_on_therapy": rng.uniform(0, 730, n),
            "engagement_score": np.round(rng.uniform(0, 10, n), 2),
            "disease_severity": np.round(rng.uniform(0, 10, n), 2),
            "insurance_type": rng.choice(ENUMS["insurance_type"], n),
            "age_group": rng.choice(ENUMS["age_group"], n),
        }
    )
    m = len(hcps)
    hcp = pd.DataFrame(
        {
            "hcp_id": hcps,
            "decile": rng.integers(1, 11, m),
            "priority_tier": rng.integers(1, 6, m),
            "years_experience": rng.integers(0, 41, m),
            "digital_engagement_score": np.round(rng.uniform(0, 1, m), 3),
            "peer_influence_score": np.round(rng.uniform(0, 1, m), 3),
            "patients_treated": rng.poisson(50, m),
            "patient_adverse_rate_180d": rng.beta(1, 15, m),
        }
    )
    triggers_30d = rng.poisson(1.2, n)
    trigger = pd.DataFrame(
        {
            "patient_id": patients,
            "triggers_30d": triggers_30d,
            "critical_triggers_30d": rng.binomial(triggers_30d, 0.1),
            "trigger_acceptance_rate_90d": rng.beta(2, 3, n),
            "trigger_confidence_90d": rng.uniform(0.5, 1.0, n),
        }
    )
    pairs = pd.MultiIndex.from_product([ENUMS["brand"], ENUMS["region"]], names=["brand", "region"])
    k = len(pairs)
    market = pairs.to_frame(index=False).assign(
        achievement_rate_30d=rng.uniform(0.6, 1.3, k),
        market_share_30d=rng.uniform(0.02, 0.4, k),
        net_sales_30d=np.round(rng.uniform(1e5, 5e6, k), 2),
    )
    frames = {
        "patient_features": patient,
        "hcp_features": hcp,
        "trigger_features": trigger,
        "market_features": market,
    }
    created = datetime.now(UTC).replace(tzinfo=None)
    return {
        view: _stamp([df.assign(event_timestamp=snapshot)], view, created)
        for view, df in frames.items()
    }


# --- stores --------------------------------------------------------------------------


@dataclass
class Backend:
    """One online store (with its own registry) over the shared offline Parquet."""

    name: str  # "SQLite" or "Redis"
    feast: object  # FeastResource
    store: object  # feast.FeatureStore

    @property
    def sqlite_path(self) -> Path:
        return Path(self.feast.home) / "feast" / "online_store.db"


def make_backend(name: str, home: Path, warehouse: Path, project: str, redis_url: str | None):
    from e2i_platform.features.repo_objects import build_objects
    from e2i_platform.resources.feast import FeastResource

    home.mkdir(parents=True)
    # Both stores read the same offline files: link rather than write them twice.
    (home / "warehouse").symlink_to(warehouse, target_is_directory=True)
    feast = FeastResource(
        home=str(home),
        project=project,
        online_store="redis" if redis_url else "sqlite",
        redis_url=redis_url,
    )
    store = feast.store()
    with quiet():
        store.apply(build_objects(feast.offline_dir))
    return Backend(name, feast, store)


def own_redis_keys(client, suffix: str) -> list[bytes]:
    """Our keys only: Feast's end with the project name, the baseline's with its suffix."""
    return list(client.scan_iter(match=b"*" + suffix.encode(), count=10_000))


def delete_redis_keys(client, suffix: str) -> None:
    keys = own_redis_keys(client, suffix)
    for i in range(0, len(keys), 10_000):
        client.delete(*keys[i : i + 10_000])


def empty_online_view(backend: Backend, redis, project: str) -> None:
    """Empty the measured view online, so every run writes into an empty store (on Redis,
    all our keys: only this view has been written when materialization is measured)."""
    if redis is not None:
        delete_redis_keys(redis, project)
    else:
        with contextlib.closing(sqlite3.connect(backend.sqlite_path)) as db, db:
            db.execute(f'DELETE FROM "{project}_{VIEW}"')


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Feast prints progress and warns about preview features: keep the table readable."""
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        yield


# --- 1. materialization --------------------------------------------------------------


@contextlib.contextmanager
def timed_parts(store, parts: dict[str, float]) -> Iterator[None]:
    """Add the time spent in each step of materialize_view to `parts`.

    Wraps, for the duration only, the functions materialize_view calls (no platform code
    is changed): the never-backwards guard read, Feast's write_to_online_store and,
    inside it, the online store's write (the rest of it is DataFrame -> protos), and
    the registry record. What is left is reading the Parquet and picking rows."""
    from unittest import mock

    import e2i_platform.features.materialize as materialize
    import e2i_platform.features.redis_writer as redis_writer

    def timer(name: str, fn: Callable) -> Callable:
        def wrapped(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                parts[name] = parts.get(name, 0.0) + time.perf_counter() - start

        return wrapped

    provider = store._get_provider()  # private, but the only seam between convert and write
    with (
        mock.patch.object(
            materialize, "online_timestamps", timer("guard", materialize.online_timestamps)
        ),
        mock.patch.object(
            store, "write_to_online_store", timer("write", store.write_to_online_store)
        ),
        mock.patch.object(
            provider, "online_write_batch", timer("store_io", provider.online_write_batch)
        ),
        mock.patch.object(
            store.registry,
            "apply_materialization",
            timer("registry", store.registry.apply_materialization),
        ),
        # The Redis path: the platform's column-wise writer instead of Feast's.
        mock.patch.object(
            redis_writer, "stored_timestamps", timer("guard", redis_writer.stored_timestamps)
        ),
        mock.patch.object(redis_writer, "write_newer", timer("redis", redis_writer.write_newer)),
    ):
        yield


def platform_materialization(backend, window, entities, repeat, redis, project):
    """Seconds of the median run of materialize_view into an empty store, and its parts."""
    from e2i_platform.features.materialize import materialize_view

    runs, parts_runs = [], []
    for _ in range(repeat):
        empty_online_view(backend, redis, project)
        parts: dict[str, float] = {}
        with quiet(), timed_parts(backend.store, parts):
            start = time.perf_counter()
            result = materialize_view(backend.store, VIEW, window, backend.feast.redis_client())
            runs.append(time.perf_counter() - start)
        # An empty store must take every entity; anything else measures the wrong path.
        assert result.entities_written == entities, result
        parts_runs.append(parts)
    # The split of the median run, so that its parts add up to the time reported.
    median_run = sorted(range(len(runs)), key=runs.__getitem__)[len(runs) // 2]
    return runs[median_run], parts_runs[median_run]


def feast_materialization(backend, window, entities, repeat, redis, project) -> float:
    """Seconds per run (median) of Feast's own materialize for the view, empty store."""
    runs = []
    for _ in range(repeat):
        empty_online_view(backend, redis, project)
        with quiet():
            start = time.perf_counter()
            backend.store.materialize(window.start, window.end, feature_views=[VIEW])
            runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def redis_baseline(redis, project: str, suffix: str, entities: int, repeat: int) -> float:
    """redis-py pipelines of HSETs writing exactly what Feast wrote, under our suffix.

    The payload is read back from the Feast keys (HGETALL) after a platform run: the
    same key lengths (serialized entity key + a suffix as long as the project), the
    same hash fields (murmur3 of view:feature, `_ts:view`) and ValueProto bytes."""
    feast_keys = own_redis_keys(redis, project)
    assert len(feast_keys) == entities, (len(feast_keys), entities)
    payload = []
    for i in range(0, len(feast_keys), PIPELINE):
        chunk = feast_keys[i : i + PIPELINE]
        with redis.pipeline(transaction=False) as pipe:
            for key in chunk:
                pipe.hgetall(key)
            values = pipe.execute()
        payload += [
            (key[: -len(project)] + suffix.encode(), h)
            for key, h in zip(chunk, values, strict=True)
        ]
    runs = []
    for _ in range(repeat):
        delete_redis_keys(redis, suffix)
        start = time.perf_counter()
        for i in range(0, len(payload), PIPELINE):
            with redis.pipeline(transaction=False) as pipe:
                for key, mapping in payload[i : i + PIPELINE]:
                    pipe.hset(key, mapping=mapping)
                pipe.execute()
        runs.append(time.perf_counter() - start)
    assert len(own_redis_keys(redis, suffix)) == entities
    delete_redis_keys(redis, suffix)
    return statistics.median(runs)


def sqlite_baseline(backend: Backend, project: str, entities: int, repeat: int) -> float:
    """sqlite3 executemany of exactly the rows Feast wrote, into a table declared alike,
    in a database file of its own (one transaction per run, as Feast's write)."""
    table = f'"{project}_{VIEW}"'
    with contextlib.closing(sqlite3.connect(backend.sqlite_path)) as db:
        schema = db.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?",
            (f"{project}_{VIEW}",),
        ).fetchone()[0]
        columns = [r[1] for r in db.execute(f"PRAGMA table_info({table})")]
        rows = db.execute(f"SELECT {', '.join(columns)} FROM {table}").fetchall()
    assert len({r[0] for r in rows}) == entities
    path = backend.sqlite_path.with_name("baseline.db")
    insert = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    runs = []
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute(schema)
        db.execute(f'CREATE INDEX "{project}_ek" ON {table} (entity_key)')
        for _ in range(repeat):
            with db:
                db.execute(f"DELETE FROM {table}")
            start = time.perf_counter()
            with db:
                db.executemany(insert, rows)
            runs.append(time.perf_counter() - start)
    path.unlink()
    return statistics.median(runs)


def split_rows(parts: dict[str, float], total: float) -> list[dict]:
    """Where a platform materialization's time goes (seconds and share of the whole)."""
    if "redis" in parts:  # the platform's Redis writer
        items = {
            "never-backwards guard: HGET pipeline": parts.get("guard", 0.0),
            "keys, column-wise encoding, HSET pipelines": parts["redis"] - parts.get("guard", 0.0),
            "registry apply_materialization": parts.get("registry", 0.0),
        }
        return _part_rows(items, total)
    items = {
        "never-backwards guard: online_timestamps": parts.get("guard", 0.0),
        "write_to_online_store: DataFrame -> protos": parts.get("write", 0.0)
        - parts.get("store_io", 0.0),
        "write_to_online_store: online store write": parts.get("store_io", 0.0),
        "registry apply_materialization": parts.get("registry", 0.0),
    }
    return _part_rows(items, total)


def _part_rows(items: dict[str, float], total: float) -> list[dict]:
    items = {**items, "read Parquet, latest per entity, rest": total - sum(items.values())}
    return [
        {"benchmark": f"  of which {k}", "value": f"{v:.2f} s", "ratio": f"{v / total:.0%}"}
        | {"target": ""}
        for k, v in items.items()
    ]


def throughput_row(label: str, entities: int, seconds: float, base_rate: float, target: str):
    """base_rate None: this row is the baseline."""
    rate = entities / seconds
    return {
        "benchmark": label,
        "value": f"{rate:,.0f} entities/s ({seconds:.2f} s)",
        "ratio": f"{rate / base_rate:.2f}x" if base_rate else "1.00x",
        "target": target,
    }


# --- 2. online read latency ----------------------------------------------------------


def entity_rows(views: dict, count: int, rng) -> dict[int, list[list[dict]]]:
    """`count` requests of 1 and of 100 entity rows: a patient, an HCP, a brand and region,
    each request drawing different entities (no store sees the same key twice in a row)."""
    patients = views["patient_features"]["patient_id"].astype(str).to_numpy()
    hcps = views["hcp_features"]["hcp_id"].astype(str).to_numpy()
    market = views["market_features"][["brand", "region"]].astype(str).to_numpy()
    out = {}
    for size in ITERATIONS:
        requests = []
        for _ in range(count):
            pick = rng.integers(0, len(market), size)
            requests.append(
                [
                    {"patient_id": p, "hcp_id": h, "brand": b, "region": r}
                    for p, h, (b, r) in zip(
                        rng.choice(patients, size, replace=False),
                        rng.choice(hcps, size),
                        market[pick],
                        strict=True,
                    )
                ]
            )
        out[size] = requests
    return out


class PlainReader:
    """The service's fields read and decoded with a plain client (the latency baseline):
    per view and entity key, the same fields Feast asks for, in one round trip per
    request for Redis and one indexed SELECT per view for SQLite."""

    def __init__(self, backend: Backend, project: str, redis):
        from feast.infra.key_encoding_utils import serialize_entity_key
        from feast.infra.online_stores.helpers import _mmh3
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        from e2i_platform.features.specs import VIEWS

        self.redis, self.project, self.views = redis, project, VIEWS
        self.version = backend.store.config.entity_key_serialization_version
        self._ser, self._ek, self._value = serialize_entity_key, EntityKey, Value
        # Fields as Feast names them in a Redis hash: murmur3("view:feature"), "_ts:view".
        self.fields = {
            v: [_mmh3(f"{v}:{f}") for f in spec.feature_names] + [f"_ts:{v}"]
            for v, spec in VIEWS.items()
        }
        if redis is None:
            self.db = sqlite3.connect(
                backend.sqlite_path, detect_types=sqlite3.PARSE_DECLTYPES, check_same_thread=False
            )

    def key(self, view: str, row: dict) -> bytes:
        keys = self.views[view].join_keys
        ek = self._ek(
            join_keys=list(keys), entity_values=[self._value(string_val=row[k]) for k in keys]
        )
        return self._ser(ek, entity_key_serialization_version=self.version)

    def keys(self, rows: list[dict]) -> dict[str, list[bytes]]:
        """Distinct entity keys per view (Feast also reads each key once per request)."""
        return {v: list(dict.fromkeys(self.key(v, row) for row in rows)) for v in self.views}

    def read(self, rows: list[dict]) -> int:
        """Decoded values read (so the caller can check that everything was served)."""
        decoded = 0
        per_view = self.keys(rows)
        if self.redis is not None:
            suffix = self.project.encode()
            with self.redis.pipeline(transaction=False) as pipe:
                for view, keys in per_view.items():
                    for key in keys:
                        pipe.hmget(key + suffix, self.fields[view])
                for values in pipe.execute():
                    for raw in values[:-1]:  # the last field is the event timestamp
                        if raw is not None:
                            self._value.FromString(raw)
                            decoded += 1
            return decoded
        for view, keys in per_view.items():
            cursor = self.db.execute(
                f'SELECT entity_key, feature_name, value, event_ts FROM "{self.project}_{view}" '
                f"WHERE entity_key IN ({','.join('?' * len(keys))})",
                keys,
            )
            for _, _, raw, _ in cursor:
                self._value.FromString(raw)
                decoded += 1
        return decoded

    def close(self) -> None:
        if self.redis is None:
            self.db.close()


def percentiles(fns: list[Callable], requests: list[list[dict]]) -> list[tuple[float, float]]:
    """p50 and p99 (ms) of each function over the same requests, after a warm-up.

    The functions take turns on each request, so drift on the machine (Redis shares
    the CPUs) hits them alike. The heap is frozen first: this process holds the whole
    benchmark's data, which a serving process would not, and full collections over it
    would show up as p99 outliers that are not the feature store's."""
    for rows in requests[:WARMUP]:
        for fn in fns:
            fn(rows)
    timings: list[list[float]] = [[] for _ in fns]
    gc.collect()
    gc.freeze()
    try:
        for rows in requests[WARMUP:]:
            for fn, out in zip(fns, timings, strict=True):
                start = time.perf_counter()
                fn(rows)
                out.append((time.perf_counter() - start) * 1000)
    finally:
        gc.unfreeze()
    return [(float(np.percentile(t, 50)), float(np.percentile(t, 99))) for t in timings]


def latency_rows(backend: Backend, views: dict, project: str, redis, seed: int) -> list[dict]:
    from e2i_platform.features.online import ServiceReader
    from e2i_platform.features.specs import FEATURE_SERVICE, VIEWS

    store = backend.store
    service = store.get_feature_service(FEATURE_SERVICE)
    plain = PlainReader(backend, project, redis)
    reader = ServiceReader(store, FEATURE_SERVICE)
    count = max(ITERATIONS.values()) + WARMUP
    by_size = entity_rows(views, count, np.random.default_rng(seed))

    def feast_read(rows: list[dict]):
        # Every view serves snapshot_epoch: the names only stay unique qualified (as in
        # training_dataset).
        return store.get_online_features(
            features=service, entity_rows=rows, full_feature_names=True
        )

    # Every view must serve every requested entity, or the latency is of a miss.
    probe = by_size[100][0]
    served = feast_read(probe).to_dict()
    assert all(
        v is not None
        for name in ("patient_features__engagement_score", "market_features__net_sales_30d")
        for v in served[name]
    )
    direct = reader.read(probe)
    assert direct == served, "ServiceReader and get_online_features disagree"
    expected = sum(len(VIEWS[v].feature_names) * len(k) for v, k in plain.keys(probe).items())
    assert plain.read(probe) == expected, (plain.read(probe), expected)

    rows = []
    try:
        for size, requests in by_size.items():
            requests = requests[: ITERATIONS[size] + WARMUP]
            (base50, base99), (p50, p99), (d50, d99) = percentiles(
                [plain.read, feast_read, reader.read], requests
            )
            target = LATENCY_TARGET_MS[size]
            label = f"{size} entity row{'s' if size > 1 else ''}"
            rows += [
                {
                    "benchmark": f"online read {backend.name}, {label}: plain client",
                    "value": f"p50 {base50:.2f} ms / p99 {base99:.2f} ms",
                    "ratio": "1.00x",
                    "target": "baseline",
                },
                {
                    "benchmark": f"online read {backend.name}, {label}: feature service, "
                    "Feast get_online_features",
                    "value": f"p50 {p50:.2f} ms / p99 {p99:.2f} ms",
                    "ratio": f"{p50 / base50:.1f}x p50, {p99 / base99:.1f}x p99",
                    "target": "reference",
                },
                {
                    "benchmark": f"online read {backend.name}, {label}: feature service, "
                    "platform ServiceReader",
                    "value": f"p50 {d50:.2f} ms / p99 {d99:.2f} ms",
                    "ratio": f"{d50 / base50:.1f}x p50, {d99 / base99:.1f}x p99",
                    "target": f"p99 <= {target:g} ms ({'met' if d99 <= target else 'NOT met'})",
                },
            ]
    finally:
        plain.close()
        reader.close()
    return rows


# --- 3. freshness --------------------------------------------------------------------


def write_history(df: pd.DataFrame, weeks: int, path: Path) -> int:
    """Rewrite a view's offline file as `weeks` weekly snapshots ending with `df`'s,
    oldest first (as compute sorts), one row group per snapshot to bound memory."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from e2i_platform.features.specs import EVENT_TIMESTAMP, SNAPSHOT_EPOCH

    writer = None
    try:
        for k in range(weeks - 1, -1, -1):
            week = df.assign(
                **{
                    EVENT_TIMESTAMP: df[EVENT_TIMESTAMP] - pd.Timedelta(weeks=k),
                    SNAPSHOT_EPOCH: df[SNAPSHOT_EPOCH] - k * 7 * 86_400,
                }
            )
            table = pa.Table.from_pandas(week, preserve_index=False)
            writer = writer or pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()
    return weeks * len(df)


def freshness_row(backend: Backend, repeat: int, offline: str, base_s: float | None) -> dict:
    """Median seconds of evaluate_freshness over all views; `base_s`: the same with one
    snapshot offline (the row's ratio), None for that row itself."""
    from e2i_platform.features.checks import evaluate_freshness
    from e2i_platform.settings import load_settings

    settings = load_settings().feast.model_copy(update={"sample_size": FRESHNESS_SAMPLE})
    with quiet():
        results = evaluate_freshness(backend.feast, settings)  # warm: imports, connections
    # A view that is not fresh short-cuts part of the evaluation: measure the full path.
    assert all(r.status == "fresh" and r.sampled for r in results), [
        (r.view, r.status, r.reason) for r in results
    ]
    runs = []
    for _ in range(max(repeat, 5)):  # cheap: a few more runs steady the median
        with quiet():
            start = time.perf_counter()
            evaluate_freshness(backend.feast, settings)
            runs.append(time.perf_counter() - start)
    median = statistics.median(runs)
    met = "met" if median <= FRESHNESS_TARGET_S else "NOT met"
    return {
        "benchmark": f"freshness of {len(results)} views, {FRESHNESS_SAMPLE:,}-entity sample, "
        f"{backend.name}, {offline}",
        "value": f"{median * 1000:.0f} ms (max {max(runs) * 1000:.0f} ms)",
        "ratio": f"{median / base_s:.2f}x" if base_s else "1.00x",
        "target": f"<= {FRESHNESS_TARGET_S:g} s ({met})",
        "seconds": median,  # for the next row's ratio; dropped before returning
    }


# --- the whole run -------------------------------------------------------------------


def bench_feature_store(repeat: int = 3, entities: int = 50_000) -> list[dict]:
    import redis as redis_py

    from e2i_platform.features.materialize import Window, materialize_view
    from e2i_platform.settings import load_settings

    redis_url = os.environ.get("E2I_TEST_REDIS_URL", DEFAULT_REDIS)
    client = redis_py.Redis.from_url(redis_url)
    client.ping()  # no Redis is an error here: half a benchmark would read as a result
    token = uuid.uuid4().hex[:12]
    project = f"e2ibench{token}"
    suffix = f"e2ibase_{token}"  # as long as the project, so baseline keys are as long
    assert len(suffix) == len(project)

    tmp = Path(tempfile.mkdtemp(prefix="e2i-bench-fs-"))
    try:
        # Snapshot a few minutes old (fresh), window ending now, as an hourly run.
        now = datetime.now(UTC)
        snapshot = pd.Timestamp(now.replace(tzinfo=None, second=0, microsecond=0))
        snapshot -= pd.Timedelta(minutes=5)
        window = Window(now - timedelta(days=1), now)
        views = synthetic_views(entities, snapshot)
        warehouse = tmp / "warehouse"
        warehouse.mkdir()
        for view, df in views.items():
            df.to_parquet(warehouse / f"{view}.parquet", index=False)

        sqlite = make_backend("SQLite", tmp / "sqlite", warehouse, project, None)
        redis = make_backend("Redis", tmp / "redis", warehouse, project, redis_url)

        # 1. Materialization: platform path, its plain baseline, Feast's own path.
        rows: list[dict] = []
        for backend, db in ((redis, client), (sqlite, None)):
            platform_s, parts = platform_materialization(
                backend, window, entities, repeat, db, project
            )
            if db is not None:
                base_s = redis_baseline(client, project, suffix, entities, repeat)
                base_label = f"redis-py pipelines of {PIPELINE:,} HSETs, same payload"
                target = f">= {THROUGHPUT_TARGET:,}/s"
                target += " (met)" if entities / platform_s >= THROUGHPUT_TARGET else " (NOT met)"
            else:
                base_s = sqlite_baseline(backend, project, entities, repeat)
                base_label = "sqlite3 executemany, same rows"
                target = ""
            feast_s = feast_materialization(backend, window, entities, repeat, db, project)
            base_rate = entities / base_s
            what = f"materialize {entities:,} {VIEW} -> {backend.name}"
            rows += [
                throughput_row(f"{what}: {base_label}", entities, base_s, None, "baseline"),
                throughput_row(
                    f"{what}: platform materialize_view", entities, platform_s, base_rate, target
                ),
                *split_rows(parts, platform_s),
                throughput_row(
                    f"{what}: Feast store.materialize (reference)",
                    entities,
                    feast_s,
                    base_rate,
                    "reference",
                ),
            ]

        # Every view online, through the platform path, for reads and freshness.
        for backend in (sqlite, redis):
            with quiet():
                for view in views:
                    materialize_view(backend.store, view, window, backend.feast.redis_client())

        # 2. Online read latency, 3. freshness.
        for seed, (backend, db) in enumerate(((sqlite, None), (redis, client))):
            rows += latency_rows(backend, views, project, db, seed)
        single = {
            b.name: freshness_row(b, repeat, "1 snapshot offline", None) for b in (sqlite, redis)
        }
        # Freshness reads the keys and times of the whole offline file, and the platform
        # keeps `snapshot_weeks` of weekly history there: measure that size as well (the
        # newest snapshot, hence what is online and fresh, is unchanged).
        weeks = load_settings().feast.snapshot_weeks
        offline_rows = {
            view: write_history(df, weeks, warehouse / f"{view}.parquet")
            for view, df in views.items()
        }
        history = {
            b.name: freshness_row(
                b,
                repeat,
                f"{weeks} weekly snapshots offline ({offline_rows[VIEW]:,} {VIEW} rows)",
                single[b.name]["seconds"],
            )
            for b in (sqlite, redis)
        }
        for row in (*single.values(), *history.values()):
            del row["seconds"]
            rows.append(row)
        return rows
    finally:
        # Exactly our keys: Feast's end with the project, the baseline's with its suffix.
        for own in (project, suffix):
            delete_redis_keys(client, own)
        leftover = len(own_redis_keys(client, project)) + len(own_redis_keys(client, suffix))
        shutil.rmtree(tmp, ignore_errors=True)
        if leftover:
            print(f"warning: {leftover} benchmark keys left in Redis", file=sys.stderr)


def profile_platform_redis(entities: int, out: Path | None) -> None:
    """cProfile of one platform materialization into an empty Redis store (diagnosis)."""
    import cProfile
    import pstats

    import redis as redis_py

    from e2i_platform.features.materialize import Window, materialize_view

    url = os.environ.get("E2I_TEST_REDIS_URL", DEFAULT_REDIS)
    client = redis_py.Redis.from_url(url)
    project = f"e2ibench{uuid.uuid4().hex[:12]}"
    tmp = Path(tempfile.mkdtemp(prefix="e2i-bench-fs-"))
    try:
        now = datetime.now(UTC)
        snapshot = pd.Timestamp(now.replace(tzinfo=None, second=0, microsecond=0))
        views = synthetic_views(entities, snapshot - pd.Timedelta(minutes=5))
        warehouse = tmp / "warehouse"
        warehouse.mkdir()
        for view, df in views.items():
            df.to_parquet(warehouse / f"{view}.parquet", index=False)
        backend = make_backend("Redis", tmp / "redis", warehouse, project, url)
        window = Window(now - timedelta(days=1), now)
        profiler = cProfile.Profile()
        with quiet():
            profiler.enable()
            materialize_view(backend.store, VIEW, window, backend.feast.redis_client())
            profiler.disable()
        if out:
            profiler.dump_stats(out)
        stats = pstats.Stats(profiler).strip_dirs().sort_stats("cumulative")
        stats.print_stats(45)
        stats.sort_stats("tottime").print_stats(25)
    finally:
        delete_redis_keys(client, project)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    from run import print_table

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--entities", type=int, default=50_000)
    parser.add_argument(
        "--profile", action="store_true", help="cProfile one platform Redis materialization"
    )
    parser.add_argument("--profile-out", type=Path, help="also write the pstats file here")
    args = parser.parse_args()
    if args.profile:
        profile_platform_redis(args.entities, args.profile_out)
        return 0
    started = time.perf_counter()
    rows = bench_feature_store(args.repeat, args.entities)
    print()
    print_table(rows)
    print(f"\n({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
