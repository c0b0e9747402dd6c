"""What the training set reads of its inputs, so training_dataset loads only those
columns (input metadata `columns`, honoured by the warehouse IO manager): the label's
columns and the times `features.compute.as_of` reads. Pure Python: definitions use it."""

from e2i_platform.contract import TABLES


def _with_times(table: str, *columns: str) -> list[str]:
    spec = TABLES[table]
    return list(dict.fromkeys(c for c in (*columns, spec.event_time, spec.loaded_at) if c))


INPUT_COLUMNS = {
    "patient_journeys": _with_times(
        "patient_journeys",
        "patient_id",
        "hcp_id",
        "brand",
        "geographic_region",
        "journey_start_date",
    ),
    "treatment_events": _with_times(
        "treatment_events", "patient_id", "event_date", "discontinuation_flag"
    ),
}
