"""What the generator is asked for: seed, size, history and anchor. Kept apart from the
generator (NumPy, pandas) so deciding whether a source changed costs no heavy import."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class GeneratorSpec:
    seed: int
    patients: int
    hcps: int
    history_days: int
    anchor: datetime  # naive UTC: the end of every timeline

    @property
    def description(self) -> dict[str, object]:
        return {
            "seed": self.seed,
            "patients": self.patients,
            "hcps": self.hcps,
            "history_days": self.history_days,
            "anchor": self.anchor.isoformat(),
        }


def floor_anchor(now: datetime, floor: str) -> datetime:
    """Floor the run time so runs within the same period regenerate identical data."""
    if floor == "hour":
        return now.replace(minute=0, second=0, microsecond=0)
    if floor == "day":
        return now.replace(hour=0, minute=0, second=0, microsecond=0)
    if floor == "none":
        return now.replace(microsecond=0)
    raise ValueError(f"unknown anchor floor {floor!r} (hour, day or none)")
