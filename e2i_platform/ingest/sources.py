"""Where raw tables come from: a landing file or the generator, by each table's policy.

`<store>/landing/<table>.parquet` or `<table>.csv` is ingested as is (CSV as
text, except booleans, which are parsed strictly so that "False" never becomes
True). `<store>` is the home on this machine's disk, or the object store every
machine shares (`platform.store.url`, `lib.store.store_root`): then the landing
directory is a URL (`s3://bucket/prefix/landing`), files are read through fsspec, and
paths in metadata and errors are those URLs. The policy (config/platform.yaml `sources`) decides: `auto` reads the landing
file when present, else the deterministic generator; `generator` always generates;
`landing` needs the file, and its absence fails the raw table naming the path. Either
way the caller gets the frame plus a description of the source (with the policy) for
the asset metadata.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg

from e2i_platform.contract import table as contract_table
from e2i_platform.lib.store import is_remote, store_root
from e2i_platform.lib.versions import sha256_file

if TYPE_CHECKING:
    from upath import UPath

LANDING = "landing"

_TRUE = {"true", "t", "1", "yes", "y"}
_FALSE = {"false", "f", "0", "no", "n"}


class LandingFileError(dg.Failure):
    """A landing file exists but cannot be ingested; the message names it and the problem."""


@dataclass(frozen=True)
class LoadedTable:
    frame: Any  # pandas.DataFrame
    source: dict[str, Any]
    version: str  # the raw asset's data version: what the frame was made from


def landing_location(location: str | Path) -> Path | UPath:
    """A landing directory or file named by text: a local path, or a URL in an object
    store (`s3://bucket/prefix/landing`, its endpoint and credentials from the
    environment)."""
    text = str(location)
    return store_root(text, text) if "://" in text else Path(text)


def landing_candidates(landing_dir: Path | UPath, table: str) -> tuple[Path | UPath, Path | UPath]:
    """Where a table's landing file may be."""
    return landing_dir / f"{table}.parquet", landing_dir / f"{table}.csv"


def landing_file(landing_dir: Path | UPath, table: str) -> Path | UPath | None:
    candidates = [p for p in landing_candidates(landing_dir, table) if p.exists()]
    if len(candidates) > 1:
        raise LandingFileError(
            f"landing: both {candidates[0]} and {candidates[1]} exist for table {table!r}; "
            "keep exactly one"
        )
    return candidates[0] if candidates else None


def _parse_booleans(df, table: str):
    """Parse text booleans of the contract's bool columns; leave a column untouched
    (so the schema gate reports its dtype) when any value is not a boolean word."""
    for col in contract_table(table).columns:
        if col.dtype != "bool" or col.name not in df.columns:
            continue
        text = df[col.name].str.strip().str.lower()
        known = text.isin(_TRUE | _FALSE) | text.isna()
        if known.all() and not text.isna().any():
            df[col.name] = text.isin(_TRUE)
    return df


def read_landing(path: Path | UPath, table: str):
    import pandas as pd

    if path.stat().st_size == 0:
        raise LandingFileError(f"landing file {path} for table {table!r} is empty (0 bytes)")

    def read(source):
        if path.suffix == ".parquet":
            return pd.read_parquet(source)
        return pd.read_csv(source, dtype=str, keep_default_na=True)

    try:
        if is_remote(path):
            with path.open("rb") as fh:  # an object in the shared store
                df = read(fh)
        else:
            df = read(path)
    except Exception as exc:  # every reader error means the same thing to the user
        kind = "Parquet" if path.suffix == ".parquet" else "CSV"
        raise LandingFileError(
            f"landing file {path} for table {table!r} is not readable {kind}: "
            f"{type(exc).__name__}: {exc}"
        ) from None
    if len(df.columns) == 0:
        raise LandingFileError(f"landing file {path} for table {table!r} has no columns")
    if len(df) == 0:
        raise LandingFileError(f"landing file {path} for table {table!r} has no rows")
    if path.suffix == ".csv":
        df = _parse_booleans(df, table)
    return df


class SourceResource(dg.ConfigurableResource):
    """Landing directory and generator settings for the raw tables."""

    landing_dir: str  # a local path, or a URL in the shared object store (`landing_dir_for`)
    seed: int
    patients: int
    hcps: int
    history_days: int
    anchor_floor: str = "hour"
    anchor: str | None = None  # fixed ISO anchor (naive UTC); default: the run time
    # SourceSettings: `landing`, `generator` or `auto`, by default and per table.
    default_policy: str = "auto"
    table_policies: dict[str, str] = {}

    @staticmethod
    def landing_dir_for(home: str | Path, store_url: str | None) -> str:
        """`<store>/landing`: under the home, or in the object store of `store_url`."""
        return str(store_root(home, store_url) / LANDING)

    def policy(self, table: str) -> str:
        return self.table_policies.get(table, self.default_policy)

    def generator_spec(self):
        from e2i_platform.ingest.spec import GeneratorSpec, floor_anchor

        if self.anchor:
            anchor = datetime.fromisoformat(self.anchor).replace(tzinfo=None)
        else:
            anchor = floor_anchor(datetime.now(UTC).replace(tzinfo=None), self.anchor_floor)
        return GeneratorSpec(
            seed=self.seed,
            patients=self.patients,
            hcps=self.hcps,
            history_days=self.history_days,
            anchor=anchor,
        )

    def source_version(self, table: str) -> str:
        """What `load(table)` would read, as a version, without reading it: the landing
        file's sha256, or a hash of the generator's spec (its output is a function of
        the spec and the code, and the code version is recorded separately)."""
        return _version(table, self.describe(table))

    def describe(self, table: str, spec=None) -> dict[str, Any]:
        """Where `load(table)` would read from, as recorded in the raw asset's `source`
        metadata: the landing file's path and sha256, or the generator's spec; with the
        policy that chose it. Under `landing` with no file: kind `missing` and the paths
        looked for (`load` fails on it; the planner sees a changed source and runs it)."""
        policy = self.policy(table)
        landing = landing_location(self.landing_dir)
        path = landing_file(landing, table)
        if path is not None and policy != "generator":
            return {
                "kind": "landing_file",
                "path": str(path),
                "sha256": sha256_file(path),
                "policy": policy,
            }
        if policy == "landing":
            expected = [str(p) for p in landing_candidates(landing, table)]
            return {"kind": "missing", "expected": expected, "policy": policy}
        described = {"kind": "generator", **(spec or self.generator_spec()).description}
        if path is not None:  # the generator policy ignores it: visibly, never silently
            described["landing_file_ignored"] = str(path)
        return {**described, "policy": policy}

    def load(self, table: str) -> LoadedTable:
        spec = self.generator_spec()  # once: the anchor must not move between two reads
        source = self.describe(table, spec)
        if source["kind"] == "missing":
            raise LandingFileError(
                f"raw_{table}: source policy 'landing' needs a landing file for table "
                f"{table!r} and there is none: expected {source['expected'][0]} or "
                f"{source['expected'][1]} (nothing is generated under this policy; set "
                f"sources.tables.{table} in config/platform.yaml to change it)"
            )
        if source["kind"] == "landing_file":
            frame = read_landing(landing_location(source["path"]), table)
        else:
            from e2i_platform.ingest.generator import generate

            frame = generate(table, spec)
        return LoadedTable(frame, source, _version(table, source))


def source_change(before: dict[str, Any] | None, now: dict[str, Any]) -> str:
    """Why a raw table's source differs from what its last materialization read, in
    words a person can check (`before`, `now`: `SourceResource.describe` outputs)."""
    if not before or "kind" not in before:
        return "source changed (its last materialization did not record the source)"
    if now["kind"] == "missing":
        return f"landing file missing under the 'landing' policy: {now['expected'][0]}"
    if before["kind"] != now["kind"]:
        if now["kind"] == "landing_file":
            return f"landing file appeared: {now['path']} (sha {now['sha256'][:12]}…)"
        return f"landing file {before.get('path')} is gone: the generator supplies the table"
    if now["kind"] == "landing_file":
        if before.get("path") != now["path"]:
            return f"landing file is now {now['path']} (was {before.get('path')})"
        return (
            f"landing file changed: sha {str(before.get('sha256'))[:12]}… -> "
            f"{now['sha256'][:12]}… ({now['path']})"
        )
    changes = []
    if before.get("anchor") != now["anchor"]:
        moved = "advanced" if str(before.get("anchor")) < now["anchor"] else "moved back"
        at = datetime.fromisoformat(now["anchor"]).strftime("%Y-%m-%d %H:%M UTC")
        changes.append(f"generated data {moved} to {at}")
    changes += [
        f"generator {field} {before.get(field)} -> {now[field]}"
        for field in sorted(now)
        if field not in ("kind", "anchor", *NOT_VERSIONED) and before.get(field) != now[field]
    ]
    return "; ".join(changes) or "generator changed"


# Recorded with the source, but not what the data were made from.
NOT_VERSIONED = ("policy", "landing_file_ignored")


def _version(table: str, source: dict[str, Any]) -> str:
    if source["kind"] == "landing_file":
        return f"landing-{source['sha256'][:16]}"
    if source["kind"] == "missing":
        return "missing"
    described = {k: v for k, v in source.items() if k != "kind" and k not in NOT_VERSIONED}
    return _generator_version(table, described)


def _generator_version(table: str, description: dict) -> str:
    import json

    text = json.dumps({"table": table, **description}, sort_keys=True, default=str)
    return f"generator-{hashlib.sha256(text.encode()).hexdigest()[:16]}"
