"""Where raw tables come from: a landing file when present, else the generator.

`$E2I_HOME/landing/<table>.parquet` or `<table>.csv` is ingested as is (CSV as
text, except booleans, which are parsed strictly so that "False" never becomes
True). A missing landing file means the deterministic generator. Either way the
caller gets the frame plus a description of the source for the asset metadata.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg

from e2i_platform.contract import table as contract_table
from e2i_platform.lib.versions import sha256_file

_TRUE = {"true", "t", "1", "yes", "y"}
_FALSE = {"false", "f", "0", "no", "n"}


class LandingFileError(dg.Failure):
    """A landing file exists but cannot be ingested; the message names it and the problem."""


@dataclass(frozen=True)
class LoadedTable:
    frame: Any  # pandas.DataFrame
    source: dict[str, Any]
    version: str  # the raw asset's data version: what the frame was made from


def landing_file(landing_dir: Path, table: str) -> Path | None:
    candidates = [
        p for p in (landing_dir / f"{table}.parquet", landing_dir / f"{table}.csv") if p.exists()
    ]
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


def read_landing(path: Path, table: str):
    import pandas as pd

    if path.stat().st_size == 0:
        raise LandingFileError(f"landing file {path} for table {table!r} is empty (0 bytes)")
    try:
        if path.suffix == ".parquet":
            df = pd.read_parquet(path)
        else:
            df = pd.read_csv(path, dtype=str, keep_default_na=True)
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

    landing_dir: str
    seed: int
    patients: int
    hcps: int
    history_days: int
    anchor_floor: str = "hour"
    anchor: str | None = None  # fixed ISO anchor (naive UTC); default: the run time

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
        path = landing_file(Path(self.landing_dir), table)
        if path is not None:
            return f"landing-{sha256_file(path)[:16]}"
        return _generator_version(table, self.generator_spec().description)

    def load(self, table: str) -> LoadedTable:
        path = landing_file(Path(self.landing_dir), table)
        if path is not None:
            digest = sha256_file(path)
            frame = read_landing(path, table)
            source = {"kind": "landing_file", "path": str(path), "sha256": digest}
            return LoadedTable(frame, source, f"landing-{digest[:16]}")
        from e2i_platform.ingest.generator import generate

        spec = self.generator_spec()
        frame = generate(table, spec)
        description = spec.description
        return LoadedTable(
            frame, {"kind": "generator", **description}, _generator_version(table, description)
        )


def _generator_version(table: str, description: dict) -> str:
    import json

    text = json.dumps({"table": table, **description}, sort_keys=True, default=str)
    return f"generator-{hashlib.sha256(text.encode()).hexdigest()[:16]}"
