"""A home restored at another path runs on its own (issue 12, item 9).

After `make run` on a small home, the home is copied elsewhere (a restore from backup, a
second checkout) and used there: `make run --all`, then `make feast ARGS=apply`. The
copy's stored locations (MLflow's artifact URIs, the Feast registry's sources and online
tables, model paths in records, and release manifests written before paths were stored
relative to the home) all point into the copy, every gate passes, and the original is
byte for byte what it was — and, where the file system records reads, not even read.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _env(home: Path) -> dict[str, str]:
    # The fixtures' small sizes, seed, anchor and configuration copy are in os.environ.
    return {**os.environ, "E2I_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}


def _command(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=REPO,
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=900,
    )


def _reads_show(directory: Path) -> bool:
    """Whether reading a file here moves its access time (relatime does; noatime not)."""
    probe = directory / ".atime-probe"
    probe.write_bytes(b"x")
    mtime = probe.stat().st_mtime_ns
    os.utime(probe, ns=(mtime - 10**9, mtime))
    probe.read_bytes()
    seen = probe.stat().st_atime_ns != mtime - 10**9
    probe.unlink()
    return seen


def _state(home: Path) -> dict[str, tuple[str | None, bool]]:
    """Every path under `home`: a file's sha256 and whether it was read since the last
    look (each look sets its access time just below its modification time, which the
    next read by anyone moves); a directory as (None, False)."""
    state: dict[str, tuple[str | None, bool]] = {}
    for path in sorted(home.rglob("*")):
        name = str(path.relative_to(home))
        if path.is_dir() and not path.is_symlink():
            state[name] = (None, False)
            continue
        seen = path.lstat()
        unread = seen.st_atime_ns == seen.st_mtime_ns - 10**9
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        os.utime(path, ns=(seen.st_mtime_ns - 10**9, seen.st_mtime_ns))
        state[name] = (digest, not unread)
    return state


def _differences(before: dict, after: dict, reads: bool) -> list[str]:
    found = [f"new: {p}" for p in sorted(after.keys() - before.keys())]
    found += [f"gone: {p}" for p in sorted(before.keys() - after.keys())]
    for path in sorted(before.keys() & after.keys()):
        if before[path][0] != after[path][0]:
            found.append(f"changed: {path}")
        elif reads and after[path][1]:
            found.append(f"read: {path}")
    return found


def _as_written_before(copy: Path, original: Path) -> list[Path]:
    """Make the copy's release manifests name their model by its absolute path in the
    original home, as manifests were written before paths were stored relative (and so
    before they carried a content hash)."""
    manifests = sorted((copy / "releases").glob("*/manifest.json"))
    for path in manifests:
        manifest = json.loads(path.read_text())
        manifest.pop("content_sha256")
        manifest["model"]["model_file"] = str(original / manifest["model"]["model_file"])
        path.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return manifests


def _records_naming(home: Path, text: str, skip: list[Path]) -> list[str]:
    """The JSON records and manifests under `home` whose content holds `text`."""
    files = [
        *home.glob("warehouse/*.json"),
        *home.glob("warehouse/.published/*.json"),
        *home.glob("releases/*/manifest.json"),
        *home.glob("models/*/*/v*/metadata.json"),
    ]
    return [str(f) for f in files if f not in skip and text in f.read_text()]


def test_a_copied_home_runs_on_its_own_and_leaves_the_original_untouched(
    e2i_home, config_copy, tmp_path
):
    # 300 patients cannot judge a model: the quality and fairness bars are lowered (the
    # gates have their own tests); every gate must still pass.
    promotion = config_copy / "promotion.yaml"
    text = promotion.read_text().replace("min_roc_auc: 0.65", "min_roc_auc: 0.5")
    promotion.write_text(text.replace("max_region_auc_gap: 0.15", "max_region_auc_gap: 1.0"))
    first = _command(e2i_home, "e2i_platform.ops.run")
    assert first.returncode == 0 and "Stopped by" not in first.stdout, first.stdout + first.stderr
    assert "Champion: release" in first.stdout

    copy = tmp_path / "restored" / "e2i"
    shutil.copytree(e2i_home, copy, symlinks=True)
    old_manifests = _as_written_before(copy, e2i_home)
    assert old_manifests
    reads = _reads_show(e2i_home)
    if not reads:
        warnings.warn("this file system does not record reads: checking bytes only", stacklevel=1)
    before = _state(e2i_home)

    # What the issue asks: `make run --all` on the copy, nothing before it.
    rerun = _command(copy, "e2i_platform.ops.run", "--all")
    output = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0, output
    assert "Assets materialized (26)" in rerun.stdout and "Stopped by" not in rerun.stdout
    gates = re.findall(r"^  (PASS|FAIL \(\w+\)) +(\S+):", rerun.stdout, flags=re.M)
    assert len(gates) >= 20 and {verdict for verdict, _ in gates} == {"PASS"}, gates
    assert f"manifest {copy / 'releases'}" in rerun.stdout
    assert _differences(before, _state(e2i_home), reads) == []

    # Then the Feast CLI on the copy (it tears down the online tables the registry
    # records: the copy's own by now; before the run, the registry's re-pointing does it,
    # tests/unit/test_registry_paths.py).
    feast = _command(copy, "e2i_platform.features.cli", "apply")
    assert feast.returncode == 0, feast.stdout + feast.stderr
    assert _differences(before, _state(e2i_home), reads) == []

    # What the copy stores now names the copy (or paths relative to it); only the
    # manifests made to look old still hold the original's path, and were read through it.
    original = str(e2i_home)
    assert _records_naming(copy, original, skip=old_manifests) == []
    trained = json.loads((copy / "warehouse" / "trained_model.json").read_text())
    assert not Path(trained["model_file"]).is_absolute()
    assert (copy / trained["model_file"]).is_file()
    _assert_mlflow_names_the_copy(copy, original)
    _assert_feast_registry_names_the_copy(copy)


def _assert_mlflow_names_the_copy(copy: Path, original: str) -> None:
    from e2i_platform.resources.mlflow_artifacts import LOCATION_COLUMNS

    root = (copy / "mlflow" / "artifacts").as_uri()
    with sqlite3.connect(copy / "mlflow" / "mlflow.db") as db:
        (location,) = db.execute(
            "SELECT artifact_location FROM experiments WHERE name = 'e2i_discontinuation'"
        ).fetchone()
        assert location == root
        for table, column, _ in LOCATION_COLUMNS:
            values = [v for (v,) in db.execute(f"SELECT {column} FROM {table}") if v]
            assert not [v for v in values if original in v], (table, column)
        uris = [v for (v,) in db.execute("SELECT artifact_uri FROM runs")]
        assert uris and all(u.startswith(root + "/") for u in uris)


def _assert_feast_registry_names_the_copy(copy: Path) -> None:
    from e2i_platform.resources.feast import FeastResource
    from e2i_platform.settings import load_settings

    resource = FeastResource.for_settings(load_settings()).model_copy(update={"home": str(copy)})
    store = resource.store()
    sources = {v.name: Path(v.batch_source.path) for v in store.list_feature_views()}
    assert sources and all(p.is_relative_to(copy) for p in sources.values()), sources
    tables = [
        Path(o.sqlite_table.path).resolve()
        for o in store.registry.proto().infra.infra_objects
        if o.HasField("sqlite_table")
    ]
    assert tables and set(tables) == {(copy / "feast" / "online_store.db").resolve()}
