"""The warehouse under E2I_HOME, or in the object store of `platform.store.url`
(Parquet tables, JSON records), as IO managers that publish a value only after its
gates."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

from e2i_platform.lib import store
from e2i_platform.resources.config import ConfigResource
from e2i_platform.resources.publication import (
    Publications,
    PublishedValueChanged,
    note_loaded,
    write_json,
)

if TYPE_CHECKING:
    from upath import UPath


class PublishingIOManager(dg.ConfigurableIOManager):
    """Values under `<home>/warehouse` or, with `store_url`, `<store_url>/warehouse` in an
    object store every machine shares (`lib.store`), published after their gates
    (`resources.publication`).

    `handle_output` stages the run's value; an asset without blocking checks is
    published at once, any other when its last blocking check passes. A check step
    reads the value it audits (its asset's latest materialization, staged); every
    other step reads the published value. A step that fails never reaches
    `handle_output`, and a value a gate rejects is never published: either way the
    last good value stays where readers look.
    """

    home: str
    e2i_config: ConfigResource  # the gates judge consumers against the configuration in force
    # s3://bucket/prefix: the warehouse lives there, not under `home` (settings:
    # platform.store.url; endpoint and credentials from the environment).
    store_url: str | None = None

    @property
    def extension(self) -> str:
        raise NotImplementedError

    def write(self, obj, path: Path) -> None:
        """Write the value to a local file (staging uploads it to an object store)."""
        raise NotImplementedError

    def read(self, path: Path | UPath, columns: list[str] | None = None):
        """The stored value (at a local path, or a `UPath` in an object store); a table
        input may ask for some `columns` only (input metadata `columns`, e.g.
        `dg.AssetIn(metadata={"columns": [...]})`)."""
        raise NotImplementedError

    def parse(self, data: bytes, columns: list[str] | None = None):
        """The stored value from its bytes (what a check step read and hashed)."""
        raise NotImplementedError

    def describe(self, obj) -> dict:
        return {}

    @property
    def publications(self) -> Publications:
        return Publications.of(self.home, self.store_url)

    def path_for(self, key: dg.AssetKey) -> Path | UPath:
        """The published value: the file external readers use."""
        return self.publications.published_path(key.to_user_string(), self.extension)

    def handle_output(self, context: dg.OutputContext, obj) -> None:
        from e2i_platform.lib import step_cost
        from e2i_platform.lib.graph import blocking_checks, location_graph

        asset, pubs = context.asset_key.to_user_string(), self.publications
        staged = pubs.stage(asset, context.run_id, self.extension, lambda p: self.write(obj, p))
        gates = blocking_checks(location_graph(context.step_context.job_def), [context.asset_key])
        metadata = dict(self.describe(obj))
        if gates:
            metadata["staged_path"] = dg.MetadataValue.path(str(staged))
            metadata["published"] = dg.MetadataValue.text(
                "not yet: published when "
                + ", ".join(k.name for k in gates)
                + " passed on this value"
            )
        else:
            with pubs.lock(asset):
                record = pubs.publish(asset, context.run_id, self.extension, [])
            metadata["path"] = dg.MetadataValue.path(str(pubs.warehouse / record["path"]))
            metadata["published"] = dg.MetadataValue.text("at once (no blocking check)")
        metadata.update(step_cost.finish(context.run_id, context.step_key))
        context.add_output_metadata(metadata)

    def load_input(self, context: dg.InputContext):
        from e2i_platform.lib import step_cost
        from e2i_platform.lib.gates import guard_step
        from e2i_platform.lib.verdicts import latest_materializations

        key, pubs = context.asset_key, self.publications
        asset = key.to_user_string()
        step = context.step_context
        if step.is_asset_check_step and key in _checked_assets(step):
            # A check audits its asset's latest value, staged or already published.
            latest = latest_materializations(context.instance, [key])[key]
            run_id = latest.run_id if latest else None
            path = pubs.value_path(asset, run_id, self.extension) if run_id else None
            if path is None:
                raise dg.Failure(
                    f"{asset}: the value materialized in run {run_id} is no longer stored "
                    f"(not at {pubs.staged_path(asset, str(run_id), self.extension)}, not "
                    "published); materialize it again"
                )
            # Read once and hashed: the check's pass is bound to these very bytes, and
            # publication refuses any others (`Publications.publish(judged=...)`).
            data = path.read_bytes()
            sha256 = hashlib.sha256(data).hexdigest()
            note_loaded(step.run_id, step.step.key, asset, run_id, sha256)
            return self.parse(data, context.definition_metadata.get("columns"))
        if not step.is_asset_check_step:
            step_cost.start(step.run_id, step.step.key)
            # An asset's upstream gates are judged before it reads anything; a check
            # reads the published value of what it compares with (the last good one).
            guard_step(step, self.e2i_config.settings())
        columns = context.definition_metadata.get("columns")
        try:
            record, value = pubs.read_published(
                asset, self.extension, lambda path: self.read(path, columns)
            )
        except (FileNotFoundError, PublishedValueChanged, store.LockTimeout) as refused:
            raise dg.Failure(str(refused)) from None
        note_loaded(step.run_id, step.step.key, asset, record["run_id"])
        return value


def _checked_assets(step) -> set[dg.AssetKey]:
    layer = step.job_def.asset_layer
    keys = (
        layer.get_asset_check_key_for_node_output(step.node_handle, output.name)
        for output in step.step.step_outputs
    )
    return {k.asset_key for k in keys if k is not None}


class WarehouseIOManager(PublishingIOManager):
    """Each table asset as Parquet: published at `<home>/warehouse/<asset>.parquet`."""

    @property
    def extension(self) -> str:
        return "parquet"

    def write(self, obj, path: Path) -> None:
        obj.to_parquet(path, index=False)

    def read(self, path: Path | UPath, columns: list[str] | None = None):
        import pandas as pd

        if isinstance(path, Path):
            return pd.read_parquet(path, columns=columns)
        with path.open("rb") as f:
            return pd.read_parquet(f, columns=columns)

    def parse(self, data: bytes, columns: list[str] | None = None):
        import io

        import pandas as pd

        return pd.read_parquet(io.BytesIO(data), columns=columns)

    def describe(self, obj) -> dict:
        return {"dagster/row_count": dg.MetadataValue.int(len(obj))}


class RecordIOManager(PublishingIOManager):
    """Each record asset (a JSON-able dict: a study, a model run, an evaluation, a
    release) as JSON: published at `<home>/warehouse/<asset>.json`."""

    @property
    def extension(self) -> str:
        return "json"

    def write(self, obj: dict, path: Path) -> None:
        write_json(obj, path)

    def read(self, path: Path | UPath, columns: list[str] | None = None) -> dict:
        return self.parse(path.read_bytes())

    def parse(self, data: bytes, columns: list[str] | None = None) -> dict:
        import json

        return json.loads(data)
