"""The Parquet warehouse under E2I_HOME, as an IO manager."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import dagster as dg


def atomic_write_parquet(df, path: Path) -> None:
    """Write next to the target and rename: readers see the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        df.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class WarehouseIOManager(dg.ConfigurableIOManager):
    """Stores each table asset as `<home>/warehouse/<asset>.parquet`.

    A step that fails never reaches `handle_output`, so the last good file stays.
    """

    home: str

    def path_for(self, key: dg.AssetKey) -> Path:
        return Path(self.home) / "warehouse" / ("/".join(key.path) + ".parquet")

    def handle_output(self, context: dg.OutputContext, obj) -> None:
        path = self.path_for(context.asset_key)
        atomic_write_parquet(obj, path)
        context.add_output_metadata(
            {
                "path": dg.MetadataValue.path(str(path)),
                "dagster/row_count": dg.MetadataValue.int(len(obj)),
            }
        )

    def load_input(self, context: dg.InputContext):
        import pandas as pd

        path = self.path_for(context.asset_key)
        if not path.exists():
            raise dg.Failure(
                f"{context.asset_key.to_user_string()}: no stored table at {path}; "
                "materialize it first"
            )
        return pd.read_parquet(path)


def atomic_write_json(obj, path: Path) -> None:
    """JSON written next to the target, flushed to disk, then renamed into place."""
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True, default=str)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class RecordIOManager(dg.ConfigurableIOManager):
    """Stores each record asset (a JSON-able dict: a study, a model run, an evaluation,
    a release) as `<home>/warehouse/<asset>.json`."""

    home: str

    def path_for(self, key: dg.AssetKey) -> Path:
        return Path(self.home) / "warehouse" / ("/".join(key.path) + ".json")

    def handle_output(self, context: dg.OutputContext, obj: dict) -> None:
        path = self.path_for(context.asset_key)
        atomic_write_json(obj, path)
        context.add_output_metadata({"path": dg.MetadataValue.path(str(path))})

    def load_input(self, context: dg.InputContext) -> dict:
        import json

        path = self.path_for(context.asset_key)
        if not path.exists():
            raise dg.Failure(
                f"{context.asset_key.to_user_string()}: no stored record at {path}; "
                "materialize it first"
            )
        return json.loads(path.read_text())
