"""Baseline for the code-location load benchmark: the smallest useful Dagster project."""

import dagster as dg


@dg.asset
def one_asset() -> int:
    """A single asset."""
    return 1


defs = dg.Definitions(assets=[one_asset])
