"""Where MLflow keeps artifacts (logged models), and a tracking DB that moved with its home.

MLflow fixes an experiment's artifact location when the experiment is created and
derives every run's and logged model's location from it, as absolute URIs stored in
the tracking database (experiments.artifact_location, runs.artifact_uri,
logged_models.artifact_location, model_versions.source and storage_location, the
traces' `mlflow.artifactLocation` tag). It offers no API to change them. Two
consequences:

* The artifact root must be chosen at creation. Without one, a database-backed store
  (PostgreSQL) puts it in `./mlruns` of whatever directory the process runs in. So the
  platform always passes one: `artifact_root` when configured, else next to a SQLite
  database, else `<home>/mlflow/artifacts`.
* A SQLite database inside the home is copied with the home (backup, restore, second
  checkout): the copy's rows still name the original's artifact directory, and new runs
  would write there. Such a database belongs to the copy alone, so its rows are
  re-rooted on first use: every stored URI under the recorded root is rewritten to the
  same place under this home (`relocate_sqlite`). Anything else that does not match
  (a shared database, a reconfigured root) is an error naming both locations: MLflow
  would otherwise write outside this home, or look for artifacts where they are not.

This module does not import MLflow.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import unquote, urlsplit

# The columns (table, column, tag key or None) that hold artifact URIs in MLflow 3.17's
# SQL schema (mlflow/store/tracking/dbmodels/models.py, model_registry/dbmodels).
LOCATION_COLUMNS = (
    ("experiments", "artifact_location", None),
    ("runs", "artifact_uri", None),
    ("logged_models", "artifact_location", None),
    ("model_versions", "source", None),
    ("model_versions", "storage_location", None),
    ("trace_tags", "value", "mlflow.artifactLocation"),
)

SQLITE_BUSY_TIMEOUT_S = 30.0  # another step may be writing the same DB


def local_path(uri: str | None) -> Path | None:
    """The directory of a `file:` URI or a plain path; None for any other scheme."""
    if not uri:
        return None
    parts = urlsplit(uri)
    if parts.scheme == "file":
        return Path(unquote(parts.path))
    if parts.scheme and len(parts.scheme) > 1:  # s3://, gs://, mlflow-artifacts:, ...
        return None
    return Path(uri)


def artifact_root_uri(
    db_path: Path | None, artifact_root: str | None, home: str | None
) -> str | None:
    """The artifact root of a database-backed store's experiments: `artifact_root` (a
    local path becomes an absolute `file:` URI; other URIs stay as they are), else
    `<db dir>/artifacts` for SQLite (`db_path`), else `<home>/mlflow/artifacts`; None
    when nothing says (no home)."""
    if artifact_root:
        path = local_path(artifact_root)
        return path.absolute().as_uri() if path is not None else artifact_root
    if db_path is not None:
        return (db_path.absolute().parent / "artifacts").as_uri()
    if home:
        return (Path(home).absolute() / "mlflow" / "artifacts").as_uri()
    return None


def same_location(recorded: str, expected: str) -> bool:
    a, b = local_path(recorded), local_path(expected)
    if a is None or b is None:
        return recorded.rstrip("/") == expected.rstrip("/")
    return a == b or a.resolve() == b.resolve()


def moved_home_root(recorded: str, expected: str, db_path: Path | None, home: str | None) -> bool:
    """Whether `recorded` is this home's artifact root as it was in another home, in a
    SQLite database of this home: the database moved with the home (so it is the copy's
    own, and re-rooting it touches nothing of the original)."""
    if db_path is None or not home:
        return False
    home_path = Path(home).absolute()
    old, new = local_path(recorded), local_path(expected)
    if old is None or new is None or urlsplit(recorded).scheme != "file":
        return False
    if not (_inside(db_path.absolute(), home_path) and _inside(new, home_path)):
        return False
    if _inside(old, home_path):
        return False
    below = _below(new, home_path)
    return len(old.parts) > len(below) and old.parts[-len(below) :] == below


def _inside(path: Path, home: Path) -> bool:
    return path.is_relative_to(home) or path.resolve().is_relative_to(home.resolve())


def _below(path: Path, home: Path) -> tuple[str, ...]:
    """`path`'s components under `home` (lexically, else once symlinks are resolved)."""
    if path.is_relative_to(home):
        return path.relative_to(home).parts
    return path.resolve().relative_to(home.resolve()).parts


def relocate_sqlite(db_path: Path, old: str, new: str) -> dict[str, int]:
    """Rewrite every stored artifact URI at or under `old` to the same place under `new`,
    in one transaction; returns the rows changed per `table.column`. Idempotent: a
    second call (another process that saw the old root) changes nothing."""
    old, new = old.rstrip("/"), new.rstrip("/")
    changed: dict[str, int] = {}
    con = sqlite3.connect(db_path, timeout=SQLITE_BUSY_TIMEOUT_S, isolation_level=None)
    try:
        con.execute("BEGIN IMMEDIATE")
        try:
            for table, column, key in LOCATION_COLUMNS:
                if column not in _columns(con, table):
                    raise RuntimeError(
                        f"{db_path}: MLflow table {table} has no column {column}; this "
                        "MLflow version stores artifact locations elsewhere"
                    )
                where = f"({column} = ? OR substr({column}, 1, ?) = ?)"
                args: list = [old, len(old) + 1, old + "/"]
                if key is not None:
                    where += " AND key = ?"
                    args.append(key)
                cursor = con.execute(
                    f"UPDATE {table} SET {column} = ? || substr({column}, ?) WHERE {where}",
                    [new, len(old) + 1, *args],
                )
                changed[f"{table}.{column}"] = cursor.rowcount
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    finally:
        con.close()
    return changed


def _columns(con: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in con.execute(f"PRAGMA table_info('{table}')")}
