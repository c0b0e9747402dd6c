"""What scoring reads of its inputs, so patient_risk_scores loads only those columns
(input metadata `columns`, honoured by the warehouse IO manager): who is a current
patient (`scoring.current_patients`) and the entity keys of the feature service.
Pure Python: definitions use it."""

SCORING_COLUMNS = {
    "patient_journeys": [
        "patient_id",
        "hcp_id",
        "brand",
        "geographic_region",
        "journey_start_date",
        "journey_end_date",
    ],
}
