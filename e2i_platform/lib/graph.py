"""The code location's asset graph as the gates need it: blocking checks, what a check
reads, where an asset's value is stored.

A job built on a selection has a graph of its own holding only the selected checks;
every gate decision is made on the whole code location's graph instead, and when that
cannot be had the decision is refused, never made on less.
"""

from __future__ import annotations

from collections.abc import Iterable

import dagster as dg

# IO managers whose values are staged and published after their gates (resources.storage),
# with the extension of their files.
STORED_EXTENSIONS = {"warehouse": "parquet", "records": "json"}


class GraphUnavailable(dg.Failure):
    """The code location's asset graph cannot be determined: no gate can be judged."""


def location_graph(job_def):
    """The asset graph of the whole code location behind `job_def`."""
    graph = job_def.asset_layer.asset_graph
    source = getattr(graph, "source_asset_graph", None)
    if source is None:
        raise GraphUnavailable(
            f"job {job_def.name}: cannot determine the code location's asset graph "
            f"({type(graph).__name__} has no source_asset_graph), so the upstream gates "
            "cannot be checked; refusing rather than assuming they passed"
        )
    return source


def blocking_checks(graph, assets: Iterable[dg.AssetKey]) -> list[dg.AssetCheckKey]:
    keys = graph.get_check_keys_for_assets(set(assets))
    return sorted((k for k in keys if graph.get_check_spec(k).blocking), key=str)


def check_reads(graph, check_key: dg.AssetCheckKey) -> set[dg.AssetKey]:
    """The assets a check reads besides the one it checks (its additional ins / deps)."""
    return {k for k in graph.get(check_key).parent_entity_keys if k != check_key.asset_key}


def stored_extension(graph, key: dg.AssetKey) -> str | None:
    """The file extension of the asset's published values, or None when its values are
    not staged and published after its gates (the online store, the registry)."""
    node = graph.get(key)
    return STORED_EXTENSIONS.get(node.io_manager_key) if node.is_materializable else None


def publishes(graph, key: dg.AssetKey) -> bool:
    return stored_extension(graph, key) is not None
