"""The referential gate: orphans and events before their journey's start."""

import dagster as dg
import pandas as pd

from e2i_platform.contract.pandera_models import validate
from e2i_platform.quality.checks import references_gate


def _typed(generated, name):
    return validate(name, generated.table(name))


def test_generated_references_resolve(generated):
    journeys = _typed(generated, "patient_journeys")
    assert references_gate("patient_journeys", journeys, _typed(generated, "hcp_profiles")).passed
    assert references_gate(
        "treatment_events", _typed(generated, "treatment_events"), journeys
    ).passed


def test_orphan_hcp_is_counted_and_sampled(generated):
    journeys = _typed(generated, "patient_journeys")
    journeys.loc[journeys.index[:3], "hcp_id"] = "HCP99999999"
    result = references_gate("patient_journeys", journeys, _typed(generated, "hcp_profiles"))
    assert result.passed is False and result.severity == dg.AssetCheckSeverity.ERROR
    assert result.metadata["failing_rows"].value == 3
    assert result.metadata["failure_counts"].data == {"hcp_id not in hcp_profiles.hcp_id": 3}
    assert result.metadata["failure_sample"].data[0]["hcp_id"] == "HCP99999999"


def test_event_before_journey_start_is_reported(generated):
    journeys = _typed(generated, "patient_journeys")
    events = _typed(generated, "treatment_events")
    first = events.index[0]
    start = journeys.set_index("patient_journey_id").at[
        events.at[first, "patient_journey_id"], "journey_start_date"
    ]
    events.at[first, "event_date"] = start - pd.Timedelta(days=2)
    events.at[events.index[1], "patient_journey_id"] = "PJ9999999999999999"
    result = references_gate("treatment_events", events, journeys)
    assert result.passed is False
    assert result.metadata["failure_counts"].data == {
        "patient_journey_id not in patient_journeys.patient_journey_id": 1,
        "event_date < patient_journeys.journey_start_date": 1,
    }
    problems = {s["problem"] for s in result.metadata["failure_sample"].data}
    assert problems == {
        "no such patient_journeys.patient_journey_id",
        "event_date before the patient_journeys journey_start_date",
    }
