"""Helpers for tests that run the platform's assets (import as `from support import ...`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pandas as pd

from e2i_platform.lib.gates import gated_asset
from e2i_platform.settings import Settings


@gated_asset(name="journey_consumer", deps=["patient_journeys"], group_name="test")
def journey_consumer(context) -> int:
    """Stands in for anything downstream of the validated journeys (the feature assets)."""
    return 1


def edit_yaml(config_dir: Path, name: str, path: tuple[str, ...], value) -> None:
    """Set one key of config/<name>.yaml (a test's writable copy)."""
    import yaml

    file = config_dir / f"{name}.yaml"
    data = yaml.safe_load(file.read_text())
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    file.write_text(yaml.safe_dump(data))


def current_release(home: Path) -> str:
    return (home / "releases" / "CURRENT").read_text().strip()


def roll_back(defs: dg.Definitions, instance, reason: str) -> dg.ExecuteInProcessResult:
    """The champion_rollback job, as the UI's Launchpad runs it."""
    return defs.resolve_job_def("champion_rollback").execute_in_process(
        instance=instance,
        resources=defs.resources,
        run_config={"ops": {"rollback_champion": {"config": {"reason": reason}}}},
        raise_on_error=False,
    )


def write_landing(home: Path, table: str, df, fmt: str = "parquet") -> Path:
    landing = home / "landing"
    landing.mkdir(parents=True, exist_ok=True)
    path = landing / f"{table}.{fmt}"
    if fmt == "parquet":
        df.to_parquet(path, index=False)
    else:
        df.to_csv(path, index=False)
    return path


def definitions(settings: Settings, extra_assets=()) -> dg.Definitions:
    from e2i_platform.definitions import build_definitions

    defs = build_definitions(settings)
    if not extra_assets:
        return defs
    return dg.Definitions.merge(defs, dg.Definitions(assets=list(extra_assets)))


def run(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    selection=None,
    run_config: dict | None = None,
) -> dg.ExecuteInProcessResult:
    """Materialize (a selection of) the definitions in process on `instance`."""
    graph_defs = [*defs.assets, *defs.asset_checks]
    return dg.materialize(
        graph_defs,
        resources=defs.resources,
        instance=instance,
        selection=selection,
        run_config=run_config,
        raise_on_error=False,
    )


def online_config(mode: str, start: str | None = None, end: str | None = None) -> dict:
    config = {"mode": mode, **({"start": start} if start else {}), **({"end": end} if end else {})}
    return {"ops": {"online_features": {"config": config}}}


def latest_metadata(instance: dg.DagsterInstance, asset: str) -> dict:
    event = instance.get_latest_materialization_event(dg.AssetKey(asset))
    return {k: getattr(v, "value", v) for k, v in event.asset_materialization.metadata.items()}


def table_selection(table: str) -> dg.AssetSelection:
    """Raw and validated assets, with their checks, of a table and the tables it references
    (its `references_resolve` gate reads them)."""
    from e2i_platform.contract import table as contract_table

    selection = dg.AssetSelection.assets(f"raw_{table}", table)
    for fk in contract_table(table).foreign_keys:
        selection |= table_selection(fk.table)
    return selection


def evaluations(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {
        f"{e.asset_key.to_user_string()}.{e.check_name}": e
        for e in result.get_asset_check_evaluations()
    }


def materialized(result: dg.ExecuteInProcessResult) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


def failed_steps(result: dg.ExecuteInProcessResult) -> dict[str, str]:
    return {
        e.step_key: e.step_failure_data.error.message
        for e in result.all_events
        if e.is_step_failure
    }


# Everything the online store depends on (the tables no feature reads are left out).
FEATURE_CHAIN = dg.AssetSelection.assets("online_features").upstream() - dg.AssetSelection.assets(
    "raw_causal_paths", "causal_paths", "raw_agent_activities", "agent_activities"
)


def anchor_hours_ago(monkeypatch, hours_ago: float) -> None:
    """Generated timelines end `hours_ago` hours before now: data of a known age."""
    anchor = datetime.now(UTC).replace(tzinfo=None) - timedelta(hours=hours_ago)
    monkeypatch.setenv("E2I_ANCHOR", anchor.isoformat(timespec="seconds"))


def feast_resource(defs: dg.Definitions):
    """The definitions' FeastResource with its EnvVar fields resolved, as in a run."""
    with dg.build_resources({"feast": defs.resources["feast"]}) as resources:
        return resources.feast


def backfill_old_window(defs: dg.Definitions, instance, offline, days_back: int):
    """Materialize [oldest offline event, newest - days_back] in `window` mode.

    Returns the window end and the run's per-view results."""
    import pandas as pd

    old_end = offline["event_timestamp"].max() - pd.Timedelta(days=days_back)
    result = run(
        defs,
        instance,
        selection=dg.AssetSelection.assets("online_features"),
        run_config=online_config(
            "window", offline["event_timestamp"].min().isoformat(), old_end.isoformat()
        ),
    )
    assert result.success, failed_steps(result)
    per_view = {r["view"]: r for r in latest_metadata(instance, "online_features")["per_view"]}
    return old_end, per_view


def assert_service_reader_matches_feast(feast) -> int:
    """ServiceReader returns exactly what Feast's get_online_features returns through
    the feature service: served entities, an unknown patient and an unknown HCP.

    Returns how many served (non-null) values were compared."""
    from e2i_platform.features.online import ServiceReader
    from e2i_platform.features.specs import FEATURE_SERVICE

    store = feast.store()
    patients = read_offline(feast.offline_dir, "patient_features")["patient_id"].unique()
    hcps = read_offline(feast.offline_dir, "hcp_features")["hcp_id"].unique()
    market = read_offline(feast.offline_dir, "market_features")[["brand", "region"]]
    market = market.drop_duplicates().astype(str).to_numpy()
    rows = [
        {"patient_id": str(p), "hcp_id": str(h), "brand": m[0], "region": m[1]}
        for p, h, m in zip(
            patients[:30], hcps[:30], (market[i % len(market)] for i in range(30)), strict=False
        )
    ]
    rows.append({**rows[0], "patient_id": "PAT99999999"})
    rows.append({**rows[1], "hcp_id": "HCP99999999", "patient_id": rows[0]["patient_id"]})
    expected = store.get_online_features(
        features=store.get_feature_service(FEATURE_SERVICE),
        entity_rows=rows,
        full_feature_names=True,
    ).to_dict()
    reader = ServiceReader(store, FEATURE_SERVICE)
    try:
        got = reader.read(rows)
    finally:
        reader.close()
    assert got == expected
    # The unknown entities are served as nulls, the known ones as values.
    assert got["patient_features__events_total"][-2] is None
    assert got["hcp_features__decile"][-1] is None
    assert got["patient_features__events_total"][-1] is not None
    return sum(v is not None for k, col in got.items() if "__" in k for v in col)


def synthetic_model_data(noise: float, seed: int):
    """Model data of one fixed shape (5 features; 2000 train, 800 validation, 10 test
    rows) whose labels follow f0 - f2; `noise` sets how hard they are to predict. Two
    seeds and noises give studies whose fingerprints match but whose values differ."""
    import numpy as np
    import pandas as pd

    from e2i_platform.training.model_data import ModelData

    rng = np.random.default_rng(seed)
    X = {
        s: pd.DataFrame(rng.normal(size=(n, 5)), columns=[f"f{i}" for i in range(5)])
        for s, n in (("train", 2000), ("validation", 800), ("test", 10))
    }
    y = {
        s: pd.Series((x["f0"] - x["f2"] + noise * rng.normal(size=len(x)) > 1).astype(int))
        for s, x in X.items()
    }
    return ModelData(list(X["train"].columns), [], {}, X, y, {})


def read_offline(offline_dir: Path, view: str) -> pd.DataFrame:
    """A view's offline Parquet file, as Feast's file source reads it."""
    from e2i_platform.features.offline import offline_path

    return pd.read_parquet(offline_path(offline_dir, view))
