"""A validated table in a real run: the raw rows typed by the contract's model, in the
contract's column order, with their schema and newest event time as metadata; and what
its definition tells the UI."""

from pathlib import Path

import dagster as dg
import pandas as pd

from e2i_platform.contract import INPUT_TABLES, TABLES
from e2i_platform.contract.pandera_models import validate
from e2i_platform.quality.assets import validated_assets, validated_table_asset
from e2i_platform.resources.publication import Publications

from support import definitions, latest_metadata, run


def test_a_validated_table_is_the_typed_raw_table_with_its_schema(settings, instance):
    defs = definitions(settings)
    raw_and_gate = dg.AssetSelection.assets("raw_hcp_profiles")
    selection = raw_and_gate | dg.AssetSelection.assets("hcp_profiles").without_checks()
    result = run(defs, instance, selection=selection)
    assert result.success
    meta = latest_metadata(instance, "hcp_profiles")
    spec = TABLES["hcp_profiles"]
    stored = pd.read_parquet(meta["staged_path"])
    pubs = Publications(Path(settings.home) / "warehouse")
    raw = pd.read_parquet(pubs.value_path("raw_hcp_profiles", result.run_id, "parquet"))
    expected = validate("hcp_profiles", raw)[list(spec.column_names)]
    # Column order and values; Parquet reads text back with another string storage.
    pd.testing.assert_frame_equal(stored, expected, check_dtype=False)
    schema = meta["dagster/column_schema"].columns
    assert [c.name for c in schema] == list(spec.column_names)
    assert [c.type for c in schema] == [str(expected[c].dtype) for c in spec.column_names]
    assert [c.description for c in schema] == [c.description for c in spec.columns]
    assert meta["newest_updated_at"] == str(stored["updated_at"].max())


def test_the_definition_of_a_validated_table():
    events = validated_table_asset("treatment_events")
    key = dg.AssetKey("treatment_events")
    assert events.key == key
    assert events.group_names_by_key[key] == "quality"
    assert events.specs_by_key[key].kinds == {"pandas", "parquet"}
    assert events.get_io_manager_key_for_asset_key(key) == "warehouse"
    assert events.keys_by_input_name["raw"] == dg.AssetKey("raw_treatment_events")
    text = events.descriptions_by_key[key]
    assert text.startswith(TABLES["treatment_events"].description + " Typed, validated ")
    assert "the `schema` gate of `raw_treatment_events` accepted" in text
    assert text.endswith(
        "Gated in turn by `expectations` (Great Expectations) and `references_resolve`."
    )
    hcps = validated_table_asset("hcp_profiles")
    assert hcps.descriptions_by_key[hcps.key].endswith(
        "Gated in turn by `expectations` (Great Expectations)."
    )
    assert [a.key.path[-1] for a in validated_assets()] == list(INPUT_TABLES)
