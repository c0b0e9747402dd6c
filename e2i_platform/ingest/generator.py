"""Deterministic generator of realistic E2I source data.

Same seed, size and anchor give the same tables, byte for byte. Timelines end at
the anchor (the run time, floored), so generated data are current. Tables are
referentially consistent (journeys point at generated HCPs, events at journeys
and never before their start) and carry a learnable signal: a journey's latent
discontinuation risk drives both its label (the discontinuation flag on its last
event) and things observable earlier (adverse events, engagement, payer, cost).

Everything is vectorised with NumPy so a million journeys take seconds (100,000
patients with every table: about 4 s here).
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cached_property, lru_cache

import numpy as np
import pandas as pd

from e2i_platform.contract import ENUMS, INPUT_TABLES, TABLES
from e2i_platform.ingest.spec import GeneratorSpec, floor_anchor  # noqa: F401 (re-exported)

DAY = np.timedelta64(1, "D")
SECOND = np.timedelta64(1, "s")
MAIN_BRANDS = ("Remibrutinib", "Fabhalta", "Kisqali")
STATES_BY_REGION = {
    "northeast": ("NY", "MA", "PA", "NJ", "CT"),
    "south": ("TX", "FL", "GA", "NC", "TN"),
    "midwest": ("IL", "OH", "MI", "MN", "WI"),
    "west": ("CA", "WA", "CO", "AZ", "OR"),
}
CAUSAL_NODES = (
    "hcp_engagement",
    "rep_visits",
    "digital_touchpoints",
    "patient_adherence",
    "prior_auth_delay",
    "copay_burden",
    "adverse_events",
    "therapy_switch",
    "market_share",
    "new_prescriptions",
)
AGENTS = {
    "coordination": ("orchestrator", "planner"),
    "causal_analytics": ("causal_impact", "gap_analyzer"),
    "monitoring": ("drift_monitor", "experiment_monitor"),
    "ml_predictions": ("prediction_synthesizer", "resource_optimizer"),
    "self_improvement": ("feedback_learner", "explainer"),
}


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _ids(prefix: str, numbers, width: int | None = None):
    numbers = np.asarray(numbers, dtype=np.int64)
    text = numbers.astype(str)
    if width is not None:
        text = np.char.zfill(text, width)
    return np.char.add(prefix, text).astype(object)


def _luhn_check_digit(prefixed_bases: np.ndarray) -> np.ndarray:
    """Check digits for rows of digits (without the check digit)."""
    digits = prefixed_bases.astype(np.int64)
    doubled = digits[:, ::-1][:, ::2] * 2  # rightmost payload digit is doubled
    doubled = np.where(doubled > 9, doubled - 9, doubled)
    total = doubled.sum(axis=1) + digits[:, ::-1][:, 1::2].sum(axis=1)
    return (10 - total % 10) % 10


def _unique_starts(patient_no, brand, start):
    """Shift colliding start days so (patient, brand, start) stays a unique natural key."""
    start = start.copy()
    for _ in range(10):
        key = pd.DataFrame({"p": patient_no, "b": brand, "s": start})
        clash = key.groupby(["p", "b", "s"]).cumcount().to_numpy()
        if not clash.any():
            return start
        start = start - clash * DAY
    raise RuntimeError("could not make journey start days unique")


class Generator:
    """All seven input tables from one spec; each table is built on first use."""

    def __init__(self, spec: GeneratorSpec):
        if spec.patients < 1 or spec.hcps < 1:
            raise ValueError("generator needs at least one patient and one HCP")
        self.spec = spec
        self.anchor = np.datetime64(spec.anchor.replace(tzinfo=None), "s")

    def _rng(self, table: str, part: int = 0) -> np.random.Generator:
        # One stream per table and part: generating one table never shifts another.
        return np.random.default_rng([self.spec.seed, INPUT_TABLES.index(table), part])

    def table(self, name: str) -> pd.DataFrame:
        if name not in INPUT_TABLES:
            raise KeyError(f"the generator makes {INPUT_TABLES}, not {name!r}")
        df = getattr(self, name)
        return df[list(TABLES[name].column_names)].copy()

    # --- hcp_profiles ----------------------------------------------------------

    @cached_property
    def _hcp_latent(self) -> pd.DataFrame:
        rng = self._rng("hcp_profiles")
        n = self.spec.hcps
        region = rng.choice(ENUMS["region"], n, p=[0.22, 0.36, 0.21, 0.21])
        return pd.DataFrame(
            {
                "region": region,
                "digital": rng.beta(2.0, 2.5, n),
                "academic": rng.random(n) < 0.2,
            }
        )

    @cached_property
    def hcp_profiles(self) -> pd.DataFrame:
        rng = self._rng("hcp_profiles", part=1)
        n = self.spec.hcps
        lat = self._hcp_latent
        bases = 100_000_000 + rng.choice(900_000_000, n, replace=False)
        prefixed = 80840 * 10**9 + bases  # the Luhn payload: prefix + 9 base digits
        digits = (prefixed[:, None] // 10 ** np.arange(13, -1, -1)) % 10
        npi = np.char.add(bases.astype(str), _luhn_check_digit(digits).astype(str))
        region = lat["region"].to_numpy()
        states = np.array([rng.choice(STATES_BY_REGION[r]) for r in region], dtype=object)
        years = np.clip(rng.normal(18, 9, n).round(), 0, 60).astype(np.int64)
        decile = rng.integers(1, 11, n)
        practice = np.where(
            lat["academic"], "academic", rng.choice(("community", "hospital", "private"), n)
        )
        # Profiles are revised now and then: most last changed more than a year ago (the
        # profile is known from then on), one in ten during the last weeks.
        recent = rng.random(n) < 0.1
        recent[0] = True  # the source is current: at least one profile changed lately
        age_days = np.where(
            recent,
            np.minimum(rng.exponential(10.0, n), 60.0),
            rng.uniform(0.55, 1.0, n) * self.spec.history_days,
        )
        updated = self.anchor - (age_days * 86400).astype(np.int64) * SECOND
        return pd.DataFrame(
            {
                "hcp_id": _ids("HCP", np.arange(1, n + 1), 8),
                "npi": npi.astype(object),
                "specialty": rng.choice(ENUMS["specialty"], n),
                "practice_type": practice.astype(object),
                "geographic_region": region,
                "state": states,
                "priority_tier": np.clip(6 - (decile + 1) // 2, 1, 5).astype(np.int64),
                "decile": decile.astype(np.int64),
                "years_experience": years,
                "digital_engagement_score": lat["digital"].round(4),
                "peer_influence_score": rng.beta(2, 3, n).round(4),
                "adoption_category": rng.choice(
                    ENUMS["adoption_category"], n, p=[0.05, 0.15, 0.3, 0.3, 0.2]
                ),
                "territory_id": _ids("TER", rng.integers(1, 400, n), 4),
                "updated_at": updated.astype("datetime64[ns]"),
            }
        )

    # --- patient_journeys ------------------------------------------------------

    @cached_property
    def _journeys(self) -> pd.DataFrame:
        """Journeys with their latent risk and outcome (label columns included)."""
        rng = self._rng("patient_journeys")
        n, s = self.spec.patients, self.spec
        hcp = self._hcp_latent
        hcp_idx = rng.integers(0, s.hcps, n)
        # About one journey in ten is a second journey of an earlier patient.
        patient_no = np.arange(1, n + 1)
        repeat = rng.random(n) < 0.1
        repeat[0] = False
        patient_no[repeat] = rng.integers(1, n + 1, repeat.sum())
        brand = rng.choice(ENUMS["brand"], n, p=[0.3, 0.25, 0.3, 0.1, 0.05])

        severity = np.clip(rng.normal(5.0, 2.0, n), 0, 10)
        engagement = np.clip(rng.normal(6.0, 2.0, n), 0, 10)
        insurance = rng.choice(ENUMS["insurance_type"], n, p=[0.45, 0.25, 0.18, 0.05, 0.07])
        age_group = rng.choice(ENUMS["age_group"], n, p=[0.15, 0.3, 0.33, 0.22])
        digital = hcp["digital"].to_numpy()[hcp_idx]
        payer_risk = pd.Series(insurance).map(
            {"commercial": -0.3, "medicare": 0.1, "medicaid": 0.5, "cash": 0.9, "other": 0.3}
        )
        logit = (
            -0.9
            - 0.45 * (engagement - 6.0)
            + 0.15 * (severity - 5.0)
            + payer_risk.to_numpy()
            + 0.35 * (age_group == "65+")
            - 1.2 * (digital - 0.45)
            + rng.normal(0, 0.6, n)
        )
        risk = _sigmoid(logit)

        span_days = s.history_days
        start_offset = rng.uniform(30, span_days, n)
        start = self.anchor - (start_offset * 86400).astype(np.int64) * SECOND
        start = start.astype("datetime64[D]").astype("datetime64[s]")  # journeys start on a day
        start = _unique_starts(patient_no, brand, start)
        # Risky journeys stop after a time on therapy that does not depend on the calendar;
        # a stop that would fall after the anchor has not happened yet (censored).
        will_stop = rng.random(n) < risk
        time_on_therapy = (rng.uniform(20, 420, n) * 86400).astype(np.int64) * SECOND
        stop = start + time_on_therapy
        discontinued = will_stop & (stop < self.anchor - DAY)
        end = np.where(discontinued, stop, np.datetime64("NaT")).astype("datetime64[s]")
        return pd.DataFrame(
            {
                "patient_no": patient_no,
                "hcp_idx": hcp_idx,
                "brand": brand,
                "severity": severity,
                "engagement": engagement,
                "insurance": insurance,
                "age_group": age_group,
                "academic": hcp["academic"].to_numpy()[hcp_idx],
                "region": np.where(
                    rng.random(n) < 0.85,
                    hcp["region"].to_numpy()[hcp_idx],
                    rng.choice(ENUMS["region"], n),
                ),
                "risk": risk,
                "discontinued": discontinued,
                "start": start,
                "end": end,
            }
        )

    @cached_property
    def patient_journeys(self) -> pd.DataFrame:
        rng = self._rng("patient_journeys", part=1)
        j = self._journeys
        n = len(j)
        ev = self._events_raw
        last_event = ev.groupby("journey_idx")["event_date"].max().reindex(range(n))
        last_event = last_event.fillna(pd.Series(j["start"])).to_numpy(dtype="datetime64[s]")
        lag = (rng.exponential(4.0, n) * 3600).astype(np.int64) * SECOND
        source = np.minimum(last_event + lag, self.anchor - 60 * SECOND)
        ingest_lag = (rng.uniform(60, 6 * 3600, n)).astype(np.int64) * SECOND
        # Rows changed in the last week arrive with the extract at the anchor (the run).
        recent = source > self.anchor - 7 * DAY
        ingestion = np.where(recent, self.anchor, np.minimum(source + ingest_lag, self.anchor))
        active_status = rng.choice(("active", "stable", "transitioning"), n, p=[0.5, 0.35, 0.15])
        status = np.where(j["discontinued"], "completed", active_status)
        stage_active = rng.choice(
            ("initial_treatment", "treatment_optimization", "maintenance", "treatment_switch"),
            n,
            p=[0.25, 0.3, 0.35, 0.1],
        )
        stage = np.where(j["discontinued"], "treatment_switch", stage_active)
        split = rng.choice(ENUMS["data_split"], n, p=[0.6, 0.15, 0.15, 0.08, 0.02])
        # Journey ids encode the row number: unique without a lookup table.
        journey_ids = np.char.add(
            "PJ", np.char.zfill((np.arange(1, n + 1) + 10**15).astype(str), 16)
        ).astype(object)
        return pd.DataFrame(
            {
                "patient_journey_id": journey_ids,
                "patient_id": _ids("PAT", j["patient_no"], 8),
                "hcp_id": _ids("HCP", j["hcp_idx"] + 1, 8),
                "brand": j["brand"].to_numpy(),
                "journey_stage": stage.astype(object),
                "journey_status": status.astype(object),
                "journey_start_date": j["start"].to_numpy().astype("datetime64[ns]"),
                "journey_end_date": j["end"].to_numpy().astype("datetime64[ns]"),
                "geographic_region": j["region"].to_numpy(),
                "age_group": j["age_group"].to_numpy(),
                "gender": rng.choice(ENUMS["gender"], n, p=[0.47, 0.51, 0.02]),
                "insurance_type": j["insurance"].to_numpy(),
                "disease_severity": j["severity"].round(3),
                "engagement_score": j["engagement"].round(3),
                "academic_hcp": j["academic"].astype(np.int64),
                "data_quality_score": np.clip(rng.beta(8, 1.5, n), 0, 1).round(4),
                "source_timestamp": source.astype("datetime64[ns]"),
                "ingestion_timestamp": ingestion.astype("datetime64[ns]"),
                "data_split": split,
            }
        )

    # --- treatment_events ------------------------------------------------------

    @cached_property
    def _events_raw(self) -> pd.DataFrame:
        rng = self._rng("treatment_events")
        j = self._journeys
        n = len(j)
        counts = 2 + rng.poisson(4, n)
        idx = np.repeat(np.arange(n), counts)
        start = j["start"].to_numpy(dtype="datetime64[s]")[idx]
        stop = np.where(
            j["discontinued"].to_numpy(), j["end"].to_numpy(dtype="datetime64[s]"), self.anchor
        )[idx]
        span = (stop - start) / SECOND
        frac = rng.random(len(idx))
        # Sort positions within each journey; the first event is the diagnosis at start.
        order = np.lexsort((frac, idx))
        frac = frac[order]
        first = np.r_[True, idx[1:] != idx[:-1]]
        last = np.r_[idx[1:] != idx[:-1], True]
        frac[first] = 0.0
        disc = j["discontinued"].to_numpy()[idx]
        frac[last & disc] = 1.0  # the discontinuation is the journey's last event
        event_date = start + (span * frac).astype(np.int64) * SECOND
        seq = np.arange(len(idx)) - np.repeat(np.cumsum(counts) - counts, counts) + 1
        risk = j["risk"].to_numpy()[idx]
        # Adverse events are more frequent on risky journeys, and precede the outcome.
        adverse = (rng.random(len(idx)) < 0.02 + 0.25 * risk) & ~first
        event_type = rng.choice(
            ("prescription", "lab_test", "procedure", "consultation", "hospitalization"),
            len(idx),
            p=[0.45, 0.2, 0.08, 0.22, 0.05],
        ).astype(object)
        event_type[first] = "diagnosis"
        base_cost = pd.Series(event_type).map(
            {
                "diagnosis": 300.0,
                "prescription": 2500.0,
                "lab_test": 150.0,
                "procedure": 1800.0,
                "consultation": 220.0,
                "hospitalization": 9000.0,
            }
        )
        cost = base_cost.to_numpy() * rng.lognormal(0.0, 0.35, len(idx)) * (1 + 0.6 * risk)
        return pd.DataFrame(
            {
                "journey_idx": idx,
                "event_date": event_date,
                "event_type": event_type,
                "cost": cost.round(2),
                "adverse_event_flag": adverse,
                "discontinuation_flag": last & disc,
                "sequence_number": seq.astype(np.int64),
                "days_from_diagnosis": ((event_date - start) // DAY).astype(np.int64),
            }
        )

    @cached_property
    def treatment_events(self) -> pd.DataFrame:
        ev = self._events_raw
        pj = self.patient_journeys
        i = ev["journey_idx"].to_numpy()
        return pd.DataFrame(
            {
                "treatment_event_id": _ids("TE", np.arange(1, len(ev) + 1), 10),
                "patient_journey_id": pj["patient_journey_id"].to_numpy()[i],
                "patient_id": pj["patient_id"].to_numpy()[i],
                "hcp_id": pj["hcp_id"].to_numpy()[i],
                "event_date": ev["event_date"].to_numpy().astype("datetime64[ns]"),
                "event_type": ev["event_type"].to_numpy(),
                "brand": pj["brand"].to_numpy()[i],
                "cost": ev["cost"].to_numpy(),
                "adverse_event_flag": ev["adverse_event_flag"].to_numpy(),
                "discontinuation_flag": ev["discontinuation_flag"].to_numpy(),
                "sequence_number": ev["sequence_number"].to_numpy(),
                "days_from_diagnosis": ev["days_from_diagnosis"].to_numpy(),
            }
        )

    # --- triggers --------------------------------------------------------------

    @cached_property
    def triggers(self) -> pd.DataFrame:
        rng = self._rng("triggers")
        j = self._journeys
        n = max(1, int(len(j) * 1.5))
        src = rng.integers(0, len(j), n)
        ts = self.anchor - (rng.uniform(0, 180, n) * 86400).astype(np.int64) * SECOND
        acceptance = rng.choice(ENUMS["acceptance_status"], n, p=[0.25, 0.35, 0.2, 0.2])
        outcome = np.where(acceptance == "accepted", rng.beta(2, 3, n).round(4), np.nan)
        return pd.DataFrame(
            {
                "trigger_id": _ids("TRG", np.arange(1, n + 1), 9),
                "patient_id": _ids("PAT", j["patient_no"].to_numpy()[src], 8),
                "hcp_id": _ids("HCP", j["hcp_idx"].to_numpy()[src] + 1, 8),
                "trigger_timestamp": ts.astype("datetime64[ns]"),
                "trigger_type": rng.choice(ENUMS["trigger_type"], n),
                "priority": rng.choice(ENUMS["priority"], n, p=[0.1, 0.3, 0.4, 0.2]),
                "confidence_score": rng.beta(5, 2, n).round(4),
                "lead_time_days": rng.integers(0, 60, n).astype(np.int64),
                "delivery_channel": rng.choice(ENUMS["delivery_channel"], n),
                "delivery_status": rng.choice(
                    ENUMS["delivery_status"], n, p=[0.1, 0.8, 0.05, 0.05]
                ),
                "acceptance_status": acceptance,
                "outcome_value": outcome,
            }
        )

    # --- business_metrics ------------------------------------------------------

    @cached_property
    def business_metrics(self) -> pd.DataFrame:
        rng = self._rng("business_metrics")
        days = min(self.spec.history_days, 540)
        today = self.anchor.astype("datetime64[D]")
        dates = today - np.arange(days) * DAY
        names = {t: f"{t}_rate" if t != "sales" else "net_sales" for t in ENUMS["metric_type"]}
        grid = pd.MultiIndex.from_product(
            [dates, ENUMS["metric_type"], MAIN_BRANDS, ENUMS["region"]],
            names=["metric_date", "metric_type", "brand", "region"],
        ).to_frame(index=False)
        n = len(grid)
        target = np.where(
            grid["metric_type"] == "sales", rng.uniform(5e4, 2e5, n), rng.uniform(0.2, 0.8, n)
        )
        value = target * np.clip(rng.normal(0.95, 0.15, n), 0, None)
        return pd.DataFrame(
            {
                "metric_id": _ids("MET", np.arange(1, n + 1), 8),
                "metric_date": grid["metric_date"].to_numpy().astype("datetime64[ns]"),
                "metric_type": grid["metric_type"].to_numpy(),
                "metric_name": grid["metric_type"].map(names).to_numpy(),
                "brand": grid["brand"].to_numpy(),
                "region": grid["region"].to_numpy(),
                "value": value,
                "target": target,
                "achievement_rate": value / target,
            }
        )

    # --- causal_paths ----------------------------------------------------------

    @cached_property
    def causal_paths(self) -> pd.DataFrame:
        rng = self._rng("causal_paths")
        n = max(20, min(2000, self.spec.patients // 10))
        k = len(CAUSAL_NODES)
        a = rng.integers(0, k, n)
        b = (a + rng.integers(1, k, n)) % k  # never equal to a
        discovered = self.anchor - (rng.uniform(0, 60, n) * 86400).astype(np.int64) * SECOND
        return pd.DataFrame(
            {
                "path_id": _ids("CP", np.arange(1, n + 1), 6),
                "discovery_date": discovered.astype("datetime64[ns]"),
                "start_node": np.array(CAUSAL_NODES, dtype=object)[a],
                "end_node": np.array(CAUSAL_NODES, dtype=object)[b],
                "path_length": rng.integers(1, 5, n).astype(np.int64),
                "causal_effect_size": np.clip(rng.normal(0.1, 0.3, n), -1, 1).round(4),
                "confidence_level": rng.beta(6, 2, n).round(4),
                "method_used": rng.choice(ENUMS["causal_method"], n),
                "validation_status": rng.choice(ENUMS["validation_status"], n, p=[0.5, 0.4, 0.1]),
            }
        )

    # --- agent_activities ------------------------------------------------------

    @cached_property
    def agent_activities(self) -> pd.DataFrame:
        rng = self._rng("agent_activities")
        n = max(50, min(50_000, self.spec.patients))
        tiers = rng.choice(ENUMS["agent_tier"], n)
        pick = rng.integers(0, 2, n)
        names = np.array([AGENTS[t][p] for t, p in zip(tiers, pick, strict=True)], dtype=object)
        ts = self.anchor - (rng.exponential(3.0, n) * 86400).astype(np.int64) * SECOND
        return pd.DataFrame(
            {
                "activity_id": _ids("ACT", np.arange(1, n + 1), 8),
                "agent_name": names,
                "agent_tier": tiers,
                "activity_timestamp": ts.astype("datetime64[ns]"),
                "activity_type": rng.choice(ENUMS["activity_type"], n),
                "processing_duration_ms": rng.lognormal(6, 1, n).round(1),
                "records_processed": rng.integers(0, 100_000, n).astype(np.int64),
                "status": rng.choice(ENUMS["activity_status"], n, p=[0.85, 0.08, 0.05, 0.02]),
            }
        )


@lru_cache(maxsize=1)
def generator_for(spec: GeneratorSpec) -> Generator:
    """The generator of the last spec asked for: a process making all seven tables (the
    in-process `make run`) builds the journeys and events they share once."""
    return Generator(spec)


def generate(name: str, spec: GeneratorSpec) -> pd.DataFrame:
    """One input table for a spec (other tables it depends on are built in passing)."""
    return generator_for(spec).table(name)


def default_spec(now: datetime | None = None, **overrides) -> GeneratorSpec:
    """A small spec anchored at `now` (UTC): for tests and quick experiments."""
    now = now or datetime.now(UTC).replace(tzinfo=None)
    values = {"seed": 7, "patients": 400, "hcps": 60, "history_days": 540}
    values.update(overrides)
    return GeneratorSpec(anchor=floor_anchor(now, "hour"), **values)


__all__ = ["Generator", "GeneratorSpec", "default_spec", "floor_anchor", "generate"]
