"""What a warm start did, as recorded on the study and shown on `hpo_study`: the
studies it seeded from (and how), the ones it rejected (and why), and a one-line
summary that says why a start was cold."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class SeedSource:
    study_name: str
    score: float
    reasons: list[str]
    method: str  # "trials" (same space: copied) or "top_k_params" (other space: clipped)
    copied: int  # finished trials added with their past values
    reevaluated: int  # best parameters queued for evaluation on the current data


@dataclass
class Rejected:
    study_name: str
    score: float | None  # None when there was no readable fingerprint to score
    reason: str


@dataclass
class WarmStartPlan:
    enabled: bool
    seeded: list[SeedSource] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    seed_trials: int = 0  # copied
    reevaluated: int = 0  # queued
    min_similarity: float = 0.7

    @property
    def cold_start(self) -> bool:
        return self.seed_trials == 0 and self.reevaluated == 0

    def summary(self) -> str:
        if self.cold_start:
            return f"cold start: {self._why_cold()}"
        n = len(self.seeded)
        sources = ", ".join(f"{s.study_name} ({s.score:.2f})" for s in self.seeded)
        text = (
            f"warm start from {n} {'study' if n == 1 else 'studies'} "
            f"({self.seed_trials} copied, {self.reevaluated} re-evaluated): {sources}"
        )
        return f"{text}; {len(self.rejected)} rejected" if self.rejected else text

    def _why_cold(self) -> str:
        if not self.enabled:
            return "warm start disabled"
        if not self.rejected:
            return "no past study in storage"
        scored = [r for r in self.rejected if r.score is not None]
        if not scored:
            return "every past study rejected (none has a readable fingerprint)"
        best = max(scored, key=lambda r: r.score)
        if best.score < self.min_similarity:
            return (
                f"every past study rejected (best score {best.score:.2f} < {self.min_similarity:g})"
            )
        return f"every past study rejected (best {best.study_name} {best.score:.2f}: {best.reason})"

    def as_metadata(self) -> dict:
        return {
            "mode": "cold" if self.cold_start else "warm",
            "summary": self.summary(),
            "enabled": self.enabled,
            "min_similarity": self.min_similarity,
            "seed_trials": self.seed_trials,
            "reevaluated": self.reevaluated,
            "seeded": [asdict(s) for s in self.seeded],
            "rejected": [asdict(r) for r in self.rejected],
        }
