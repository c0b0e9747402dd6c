"""A column-wise writer for Feast's Redis online store layout.

Feast's own path converts a DataFrame to protos one value at a time, reads every
entity's timestamp, recomputes field hashes per entity and writes one huge
pipeline: about 5,000 entities/s here. This writer produces the same bytes —
key = serialized entity key + project, field = murmur3 of "<view>:<feature>",
value = serialized ValueProto, `_ts:<view>` = serialized Timestamp — with keys
built once, values encoded per column, hashes computed once, a plain HGET
pipeline for the never-backwards check and HSET pipelines of bounded size.
Feast reads what it writes (the Redis integration tests compare served values).
"""

from __future__ import annotations

import pandas as pd

from e2i_platform.features.online import entity_key_bytes, entity_key_prefix
from e2i_platform.features.specs import EVENT_TIMESTAMP, VIEWS

BATCH = 1000


def _encoders():
    from feast.protos.feast.types.Value_pb2 import Value

    def encode(dtype: str, values: pd.Series) -> list[bytes]:
        empty = Value().SerializeToString()
        if dtype == "float":
            return [
                empty if v != v else Value(double_val=v).SerializeToString()
                for v in values.astype("float64").tolist()
            ]
        # Counts and categories repeat a lot: encode each distinct value once.
        memo: dict = {}
        if dtype == "int":
            mask = values.isna().tolist()
            ints = values.fillna(0).astype("int64").tolist()
            return [
                empty
                if m
                else memo.get(v) or memo.setdefault(v, Value(int64_val=v).SerializeToString())
                for v, m in zip(ints, mask, strict=True)
            ]
        return [
            empty
            if v is None or v != v
            else memo.get(v) or memo.setdefault(v, Value(string_val=str(v)).SerializeToString())
            for v in values.astype(object).tolist()
        ]

    return encode


def redis_keys(project: str, view: str, df: pd.DataFrame) -> list[bytes]:
    """Feast's Redis keys (serialized entity key + project) for the view's rows."""
    join_keys = sorted(VIEWS[view].join_keys)
    prefix, suffix = entity_key_prefix(join_keys), project.encode()
    columns = [df[k].astype(str).tolist() for k in join_keys]
    return [entity_key_bytes(prefix, values) + suffix for values in zip(*columns, strict=True)]


def stored_timestamps(client, keys: list[bytes], view: str) -> list[float | None]:
    """Epoch seconds of `_ts:<view>` per key (None when missing or 0, as Feast treats it)."""
    from google.protobuf.timestamp_pb2 import Timestamp

    field = f"_ts:{view}"
    out: list[float | None] = []
    for start in range(0, len(keys), BATCH):
        with client.pipeline(transaction=False) as pipe:
            for key in keys[start : start + BATCH]:
                pipe.hget(key, field)
            for raw in pipe.execute():
                if not raw:
                    out.append(None)
                    continue
                ts = Timestamp.FromString(raw)
                seconds = ts.seconds + ts.nanos / 1e9
                out.append(seconds or None)
    return out


def write_newer(client, project: str, view: str, latest: pd.DataFrame):
    """Write rows whose event time is newer than what Redis holds; return (written, kept)."""
    from feast.infra.online_stores.helpers import _mmh3
    from google.protobuf.timestamp_pb2 import Timestamp

    spec = VIEWS[view]
    keys = redis_keys(project, view, latest)
    stored = stored_timestamps(client, keys, view)
    epoch = pd.Timestamp("1970-01-01", tz="UTC")
    new_seconds = ((latest[EVENT_TIMESTAMP] - epoch) / pd.Timedelta(seconds=1)).tolist()
    newer = [s is None or n > s for n, s in zip(new_seconds, stored, strict=True)]
    rows = latest[newer]
    keys = [k for k, keep in zip(keys, newer, strict=True) if keep]
    if rows.empty:
        return 0, len(latest)

    encode = _encoders()
    fields = [_mmh3(f"{view}:{f.name}") for f in spec.features]
    columns = [encode(f.dtype, rows[f.name]) for f in spec.features]
    stamps = []
    for seconds in ((rows[EVENT_TIMESTAMP] - epoch) // pd.Timedelta(microseconds=1)).tolist():
        ts = Timestamp()
        ts.FromMicroseconds(int(seconds))
        stamps.append(ts.SerializeToString())
    ts_field = f"_ts:{view}"
    for start in range(0, len(keys), BATCH):
        with client.pipeline(transaction=False) as pipe:
            for i in range(start, min(start + BATCH, len(keys))):
                mapping = {ts_field: stamps[i]}
                mapping.update({field: col[i] for field, col in zip(fields, columns, strict=True)})
                pipe.hset(keys[i], mapping=mapping)
            pipe.execute()
    return len(keys), len(latest) - len(keys)
