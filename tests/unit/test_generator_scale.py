"""The generator is deterministic, shares its latent tables across the tables of a
spec, and keeps its tables referentially consistent at a moderate size."""

from datetime import datetime

import pandas as pd
import pytest

from e2i_platform.contract import INPUT_TABLES
from e2i_platform.ingest.generator import Generator, GeneratorSpec, generate, generator_for

ANCHOR = datetime(2026, 3, 14, 9)


def _spec(seed: int = 20261123, patients: int = 3000, hcps: int = 240) -> GeneratorSpec:
    return GeneratorSpec(seed=seed, patients=patients, hcps=hcps, history_days=730, anchor=ANCHOR)


@pytest.fixture(autouse=True)
def fresh_cache():
    generator_for.cache_clear()
    yield
    generator_for.cache_clear()


def test_same_spec_same_tables_and_another_seed_differs():
    spec = _spec()
    first, again = Generator(spec), Generator(spec)
    other = Generator(_spec(seed=20261124))
    for name in INPUT_TABLES:
        table = first.table(name)
        pd.testing.assert_frame_equal(table, again.table(name), check_exact=True)
        pd.testing.assert_frame_equal(table, generate(name, spec), check_exact=True)
        assert not table.equals(other.table(name)), name


def test_all_tables_of_a_spec_share_one_generator_and_its_latent_tables():
    spec = _spec()
    generate("patient_journeys", spec)
    journeys = generator_for(spec).__dict__["_journeys"]  # the cached latent table
    for name in INPUT_TABLES:
        generate(name, spec)
    info = generator_for.cache_info()
    assert (info.misses, info.currsize) == (1, 1)
    assert generator_for(spec).__dict__["_journeys"] is journeys  # built once, shared

    generate("causal_paths", _spec(seed=1))  # another spec replaces the kept one
    assert generator_for.cache_info().misses == 2
    generator_for(spec)  # one spec is kept: the first one was evicted and is built again
    assert generator_for.cache_info().misses == 3


def test_changing_a_returned_table_does_not_change_the_next_one():
    spec = _spec(patients=400, hcps=40)
    events = generate("treatment_events", spec)
    events.loc[:, "cost"] = -1.0
    events.loc[0, "patient_journey_id"] = "changed"
    expected = Generator(spec).table("treatment_events")
    pd.testing.assert_frame_equal(generate("treatment_events", spec), expected)
    assert generate("patient_journeys", spec)["patient_journey_id"].iloc[0] != "changed"


def test_tables_are_referentially_consistent():
    spec = _spec(patients=20_000, hcps=1_600)
    hcps = generate("hcp_profiles", spec)
    journeys = generate("patient_journeys", spec)
    events = generate("treatment_events", spec)
    triggers = generate("triggers", spec)
    assert hcps["hcp_id"].is_unique and journeys["patient_journey_id"].is_unique
    assert journeys["hcp_id"].isin(hcps["hcp_id"]).all()
    assert events["patient_journey_id"].isin(journeys["patient_journey_id"]).all()
    assert journeys["patient_journey_id"].isin(events["patient_journey_id"]).all()
    parent = journeys.set_index("patient_journey_id").loc[events["patient_journey_id"]]
    assert (events["patient_id"].to_numpy() == parent["patient_id"].to_numpy()).all()
    assert (events["hcp_id"].to_numpy() == parent["hcp_id"].to_numpy()).all()
    assert (events["event_date"].to_numpy() >= parent["journey_start_date"].to_numpy()).all()
    assert triggers["patient_id"].isin(journeys["patient_id"]).all()
    assert triggers["hcp_id"].isin(hcps["hcp_id"]).all()
    natural_key = ["patient_id", "brand", "journey_start_date"]
    assert not journeys.duplicated(natural_key).any()
