"""Landing files: read as is, and every unreadable file is a clear error naming it."""

import pytest

from e2i_platform.ingest.sources import LandingFileError, landing_file, read_landing

from support import write_landing


def test_csv_is_read_as_text_with_strict_booleans(tmp_path, generated):
    events = generated.table("treatment_events").head(20)
    path = write_landing(tmp_path, "treatment_events", events, fmt="csv")
    df = read_landing(path, "treatment_events")
    assert df["treatment_event_id"].tolist() == events["treatment_event_id"].tolist()
    assert df["cost"].dtype == object  # as is: typing is the gate's job
    assert df["discontinuation_flag"].tolist() == events["discontinuation_flag"].tolist()


def test_csv_with_a_non_boolean_word_keeps_the_column_untyped(tmp_path, generated):
    events = generated.table("treatment_events").head(5).astype({"adverse_event_flag": object})
    events.at[0, "adverse_event_flag"] = "maybe"
    path = write_landing(tmp_path, "treatment_events", events, fmt="csv")
    df = read_landing(path, "treatment_events")
    assert df["adverse_event_flag"].tolist()[0] == "maybe"


def test_empty_file_is_named(tmp_path):
    path = tmp_path / "landing" / "triggers.csv"
    path.parent.mkdir()
    path.write_bytes(b"")
    with pytest.raises(LandingFileError, match=r"triggers\.csv for table 'triggers' is empty"):
        read_landing(path, "triggers")


def test_header_only_csv_has_no_rows(tmp_path):
    path = tmp_path / "triggers.csv"
    path.write_text("trigger_id,patient_id\n")
    with pytest.raises(LandingFileError, match=r"triggers\.csv .* has no rows"):
        read_landing(path, "triggers")


def test_corrupt_parquet_is_named(tmp_path):
    path = tmp_path / "hcp_profiles.parquet"
    path.write_bytes(b"PAR1 this is not parquet at all")
    with pytest.raises(LandingFileError, match=r"hcp_profiles\.parquet .* is not readable Parquet"):
        read_landing(path, "hcp_profiles")


def test_malformed_csv_is_named_with_the_parser_problem(tmp_path):
    path = tmp_path / "causal_paths.csv"
    path.write_text('path_id,start_node\nCP1,a\nCP2,"b,c,d\n')
    with pytest.raises(LandingFileError, match=r"causal_paths\.csv .* not readable CSV"):
        read_landing(path, "causal_paths")


def test_two_landing_files_for_one_table_are_ambiguous(tmp_path):
    (tmp_path / "triggers.csv").write_text("a\n1\n")
    (tmp_path / "triggers.parquet").write_bytes(b"x")
    with pytest.raises(LandingFileError, match="keep exactly one"):
        landing_file(tmp_path, "triggers")


def _source(tmp_path, **overrides):
    from e2i_platform.ingest.sources import SourceResource

    fields = dict(landing_dir=str(tmp_path / "landing"), seed=11, patients=300, hcps=40)
    fields |= dict(history_days=30, anchor="2026-12-03T00:00:00")
    return SourceResource(**(fields | overrides))


def test_a_changed_source_is_described_in_words(tmp_path, generated):
    from e2i_platform.ingest.sources import source_change

    source = _source(tmp_path)
    generated_at_midnight = source.describe("triggers")
    later = _source(tmp_path, anchor="2026-12-03T01:00:00").describe("triggers")
    assert source_change(generated_at_midnight, later) == (
        "generated data advanced to 2026-12-03 01:00 UTC"
    )
    assert source_change(later, generated_at_midnight) == (
        "generated data moved back to 2026-12-03 00:00 UTC"
    )
    bigger = _source(tmp_path, patients=500).describe("triggers")
    assert source_change(generated_at_midnight, bigger) == "generator patients 300 -> 500"

    path = write_landing(tmp_path, "triggers", generated.table("triggers").head(10))
    landed = source.describe("triggers")
    assert landed["kind"] == "landing_file" and landed["path"] == str(path)
    assert source_change(generated_at_midnight, landed) == (
        f"landing file appeared: {path} (sha {landed['sha256'][:12]}…)"
    )
    write_landing(tmp_path, "triggers", generated.table("triggers").head(11))
    relanded = source.describe("triggers")
    assert source_change(landed, relanded) == (
        f"landing file changed: sha {landed['sha256'][:12]}… -> {relanded['sha256'][:12]}… ({path})"
    )
    path.unlink()
    assert source_change(relanded, source.describe("triggers")) == (
        f"landing file {path} is gone: the generator supplies the table"
    )
    assert source_change(None, landed).startswith("source changed (its last materialization")


def test_the_version_and_the_loaded_table_agree_with_the_description(tmp_path, generated):
    source = _source(tmp_path)
    loaded = source.load("triggers")
    assert loaded.source == source.describe("triggers")
    assert loaded.version == source.source_version("triggers")
    assert loaded.version.startswith("generator-")
    write_landing(tmp_path, "triggers", generated.table("triggers").head(10))
    landed = source.load("triggers")
    assert landed.source == source.describe("triggers")
    assert landed.version == f"landing-{landed.source['sha256'][:16]}"
    assert len(landed.frame) == 10


def test_the_landing_policy_fails_a_missing_file_naming_it(tmp_path, generated):
    from e2i_platform.ingest.sources import source_change

    source = _source(tmp_path, default_policy="landing")
    generated_before = _source(tmp_path).describe("triggers")
    missing = source.describe("triggers")
    landing = tmp_path / "landing"
    assert missing == {
        "kind": "missing",
        "expected": [str(landing / "triggers.parquet"), str(landing / "triggers.csv")],
        "policy": "landing",
    }
    assert source.source_version("triggers") == "missing"  # never a generator version
    assert source_change(generated_before, missing) == (
        f"landing file missing under the 'landing' policy: {landing / 'triggers.parquet'}"
    )
    with pytest.raises(LandingFileError) as refused:
        source.load("triggers")
    message = str(refused.value)
    assert message.startswith("raw_triggers: source policy 'landing' needs a landing file")
    assert f"{landing / 'triggers.parquet'} or {landing / 'triggers.csv'}" in message
    assert "sources.tables.triggers" in message

    write_landing(tmp_path, "triggers", generated.table("triggers").head(7))
    landed = source.load("triggers")
    assert landed.source["kind"] == "landing_file" and landed.source["policy"] == "landing"
    assert len(landed.frame) == 7


def test_the_generator_policy_ignores_a_landing_file_and_says_so(tmp_path, generated):
    auto = _source(tmp_path)
    generated_version = auto.source_version("triggers")
    path = write_landing(tmp_path, "triggers", generated.table("triggers").head(7))
    write_landing(tmp_path, "causal_paths", generated.table("causal_paths").head(3))
    source = _source(tmp_path, table_policies={"triggers": "generator"})

    ignored = source.describe("triggers")
    assert ignored["kind"] == "generator" and ignored["policy"] == "generator"
    assert ignored["landing_file_ignored"] == str(path)
    # The policy and the ignored file are recorded, not versioned: the data are the
    # generator's, as before the file landed.
    assert source.source_version("triggers") == generated_version
    assert len(source.load("triggers").frame) == len(generated.table("triggers"))
    # The other tables keep the default policy (auto): their landing file is read.
    other = source.load("causal_paths")
    assert other.source["kind"] == "landing_file" and other.source["policy"] == "auto"
    assert len(other.frame) == 3
