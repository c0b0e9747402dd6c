"""Warm start for Optuna studies: seed a new study from similar past studies.

Every study records a fingerprint of the data it was tuned on (user attribute
`FINGERPRINT_ATTR`). A new study scores every other study in its storage against
its own fingerprint and seeds itself only from those at or above
`min_similarity`, because trials from a dissimilar study can steer the sampler
somewhere worse than a cold start.

Similarity is 0 when the algorithm or the problem type differs. Otherwise it is a
weighted sum of four components, each in [0, 1]:

- feature set, 0.35: Jaccard index of the feature names (1 when the name:dtype
  hashes are identical);
- size, 0.35: max(0, 1 - |log10(rows / past_rows)|), so a 10x change scores 0;
- class balance, 0.2: 1 - |p - p'| / max(p, p');
- search space, 0.1: 1 for the same version, 0.5 otherwise.

With the default threshold of 0.7, a disjoint feature set or a 10x size change
(each at most 0.65) is enough to reject a study on its own.

Seeding does two things:

- A past study with the same search-space version donates its finished trials,
  best first (`Study.add_trials`), so a model-based sampler such as TPE is past
  its startup trials at once. Their values were measured on the past data, so
  they are added as PRUNED trials whose one intermediate value, at the last step
  a trial can report (`final_step`), is the past value: TPE learns from COMPLETE
  and PRUNED trials alike (it counts both for `n_startup_trials` and ranks pruned
  ones by their last report, latest step first), while Optuna's own
  `Study.best_trial` (and so optuna-dashboard) considers COMPLETE trials only.
  A copy therefore never out-ranks a trial measured on the current data, in
  Optuna or in the platform (`hpo.best_trial`). Each copy says what it is in its
  user attributes: `warm_start_copy` True, the source study and trial, and the
  source value.
- The best parameters of the seeding studies (`top_k` in all, most similar study
  first) are queued to be evaluated again on the current data before the
  sampler's own suggestions (`Study.enqueue_trial`). On refreshed data the old
  optimum is the likeliest new one, and only a re-evaluation says what it is
  worth now. A study with another search-space version donates only these, its
  parameters clipped to the current space.

Optuna and pandas are imported inside functions so this module stays cheap to
import.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from e2i_platform.settings.models import WarmStartSettings

FINGERPRINT_ATTR = "e2i_fingerprint"
WARM_START_ATTR = "warm_start"
# User attributes of seeded trials: which study and trial they came from.
COPIED_FROM = "warm_start_from"
COPY_MARK = "warm_start_copy"  # True on a copied trial (PRUNED here: it never ranks as best)
COPY_VALUE = "warm_start_value"  # the copied trial's value, measured on the source study's data
SUGGESTED_BY = "warm_start_suggested_by"
SOURCE_TRIAL = "warm_start_trial"

WEIGHTS = {"features": 0.35, "size": 0.35, "balance": 0.2, "search_space": 0.1}

_DROP = object()  # a clipped value that does not fit the current space (None is a valid choice)


@dataclass(frozen=True)
class DatasetFingerprint:
    rows: int
    features: int
    feature_names: tuple[str, ...]
    feature_set_hash: str
    positive_rate: float
    algorithm: str
    problem_type: str
    search_space_version: str
    # Set when the study tuned on a sample (`tuning_sample`): the train rows it came from.
    # `rows` is always what was tuned on, so size similarity compares like with like.
    sampled_from_rows: int | None = None

    def as_dict(self) -> dict:
        d = asdict(self)
        d["feature_names"] = list(self.feature_names)
        return d

    @classmethod
    def from_dict(cls, d: Any) -> DatasetFingerprint:
        if not isinstance(d, Mapping):
            raise ValueError(f"fingerprint is not a mapping: {type(d).__name__}")
        values = {}
        if d.get("sampled_from_rows") is not None:  # absent in fingerprints of older studies
            values["sampled_from_rows"] = _count(d["sampled_from_rows"])
        for key, parse in _PARSERS.items():
            if key not in d:
                raise ValueError(f"fingerprint is missing key {key!r}")
            try:
                values[key] = parse(d[key])
            except (TypeError, ValueError) as e:
                raise ValueError(f"fingerprint key {key!r} is invalid: {e}") from None
        return cls(**values)


def _count(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"expected a non-negative int, got {v!r}")
    return v


def _rate(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v <= 1:
        raise ValueError(f"expected a number in [0, 1], got {v!r}")
    return float(v)


def _text(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise ValueError(f"expected a non-empty string, got {v!r}")
    return v


def _names(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list | tuple) or not all(isinstance(n, str) for n in v):
        raise ValueError(f"expected a list of strings, got {v!r}")
    return tuple(sorted(v))


_PARSERS = {
    "rows": _count,
    "features": _count,
    "feature_names": _names,
    "feature_set_hash": _text,
    "positive_rate": _rate,
    "algorithm": _text,
    "problem_type": _text,
    "search_space_version": _text,
}


def dataset_fingerprint(
    X,
    y,
    algorithm: str,
    problem_type: str,
    search_space_version: str,
    sampled_from_rows: int | None = None,
) -> DatasetFingerprint:
    """Fingerprint a feature frame `X` (pandas DataFrame) and its labels `y` (a sample of
    `sampled_from_rows` rows when given)."""
    import numpy as np

    if len(X) != len(y):
        raise ValueError(f"X has {len(X)} rows but y has {len(y)}")
    dtypes = {str(name): str(dtype) for name, dtype in X.dtypes.items()}
    names = tuple(sorted(dtypes))
    lines = "\n".join(f"{n}:{dtypes[n]}" for n in names)
    labels = np.asarray(y)
    return DatasetFingerprint(
        rows=len(X),
        features=len(X.columns),
        feature_names=names,
        feature_set_hash=hashlib.sha256(lines.encode()).hexdigest()[:16],
        positive_rate=float(np.mean(labels == 1)) if len(labels) else 0.0,
        algorithm=algorithm,
        problem_type=problem_type,
        search_space_version=search_space_version,
        sampled_from_rows=sampled_from_rows,
    )


def similarity(current: DatasetFingerprint, past: DatasetFingerprint) -> tuple[float, list[str]]:
    """Score in [0, 1] and a reason for every component that is below 1."""
    reasons = []
    if current.algorithm != past.algorithm:
        reasons.append(f"algorithm {current.algorithm} != {past.algorithm}")
    if current.problem_type != past.problem_type:
        reasons.append(f"problem type {current.problem_type} != {past.problem_type}")
    if reasons:
        return 0.0, reasons

    mine, theirs = set(current.feature_names), set(past.feature_names)
    if current.feature_set_hash == past.feature_set_hash:
        features = 1.0
    else:
        union = mine | theirs
        features = len(mine & theirs) / len(union) if union else 1.0
        if features < 1:
            reasons.append(
                f"features Jaccard {features:.2f} ({len(mine & theirs)} shared, "
                f"{len(mine - theirs)} new, {len(theirs - mine)} gone)"
            )
        else:
            reasons.append("features: same names, different dtypes")

    if current.rows > 0 and past.rows > 0:
        ratio = current.rows / past.rows
        size = max(0.0, 1 - abs(math.log10(ratio)))
    else:
        ratio, size = math.nan, float(current.rows == past.rows)
    if size < 1:
        reasons.append(f"rows {current.rows} vs {past.rows} ({ratio:.2f}x)")

    p, q = current.positive_rate, past.positive_rate
    balance = 1 - abs(p - q) / max(p, q, 1e-9)
    if balance < 1:
        reasons.append(f"positive rate {p:.3f} vs {q:.3f}")

    same_space = current.search_space_version == past.search_space_version
    space = 1.0 if same_space else 0.5
    if not same_space:
        reasons.append(
            f"search space {current.search_space_version} != {past.search_space_version}"
        )

    score = (
        WEIGHTS["features"] * features
        + WEIGHTS["size"] * size
        + WEIGHTS["balance"] * balance
        + WEIGHTS["search_space"] * space
    )
    # Rounded so that float error cannot move a score across the threshold
    # (0.35 + 0.35 + 0.2 + 0.1 is 0.9999999999999999 in floats).
    return round(min(1.0, max(0.0, score)), 6), reasons


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


@dataclass
class _Candidate:
    name: str
    score: float
    reasons: list[str]
    fingerprint: DatasetFingerprint
    trials: list  # its own finished trials, best first


def warm_start(
    study,
    storage,
    current: DatasetFingerprint,
    settings: WarmStartSettings,
    distributions: dict,
    final_step: int = 0,
) -> WarmStartPlan:
    """Seed `study` from similar studies in `storage`; record and return the plan.

    `storage` is a database URL or an Optuna storage object; `distributions` is the
    current search space (param name -> optuna distribution); `final_step` is the last
    step at which a trial of this search reports an intermediate value (the boosting
    rounds; 0 when trials report none): copies carry their value there, so TPE ranks
    them with trials that ran to the end, ahead of any trial pruned earlier. Calling it
    again on the same study does not seed the same trials twice.
    """
    import optuna

    if len(study.directions) != 1:
        raise ValueError("warm start supports single-objective studies only")
    if isinstance(storage, str):
        # One engine for every study read, rather than one per load_study call.
        storage = optuna.storages.RDBStorage(storage)

    plan = WarmStartPlan(enabled=settings.enabled, min_similarity=settings.min_similarity)
    accepted = []
    for name in sorted(optuna.get_all_study_names(storage)):
        if name == study.study_name:
            continue
        past = optuna.load_study(study_name=name, storage=storage)
        verdict = _assess(study, past, current, settings.min_similarity)
        if isinstance(verdict, Rejected):
            if not settings.enabled:
                verdict.reason = f"warm start disabled; {verdict.reason}"
            plan.rejected.append(verdict)
        elif not settings.enabled:
            plan.rejected.append(Rejected(name, verdict.score, "warm start disabled"))
        else:
            accepted.append(verdict)

    already = _seeded_keys(study)
    queue_left = settings.top_k
    for c in sorted(accepted, key=lambda c: (-c.score, c.name)):
        room = settings.max_seed_trials - plan.seed_trials
        if len(plan.seeded) >= settings.max_seed_studies:
            plan.rejected.append(
                Rejected(c.name, c.score, f"beyond max_seed_studies={settings.max_seed_studies}")
            )
            continue
        same_space = c.fingerprint.search_space_version == current.search_space_version
        if (room <= 0 or not same_space) and queue_left <= 0:
            why = (
                f"top_k={settings.top_k}"
                if not same_space
                else (f"max_seed_trials={settings.max_seed_trials} and top_k={settings.top_k}")
            )
            plan.rejected.append(Rejected(c.name, c.score, f"{why} used up"))
            continue
        copied = (
            _copy_trials(study, c, distributions, room, already, final_step) if same_space else 0
        )
        queued = _enqueue_best(study, c, distributions, queue_left, already)
        if copied + queued == 0:
            plan.rejected.append(
                Rejected(c.name, c.score, "no trial fits the current search space")
            )
            continue
        method = "trials" if same_space else "top_k_params"
        plan.seeded.append(SeedSource(c.name, c.score, c.reasons, method, copied, queued))
        plan.seed_trials += copied
        plan.reevaluated += queued
        queue_left -= queued

    plan.rejected.sort(key=lambda r: r.study_name)
    study.set_user_attr(WARM_START_ATTR, plan.as_metadata())
    return plan


def _assess(study, past, current: DatasetFingerprint, min_similarity: float):
    """A `_Candidate` to seed from, or why `past` is `Rejected`."""
    name = past.study_name
    raw = past.user_attrs.get(FINGERPRINT_ATTR)
    if raw is None:
        return Rejected(name, None, "no dataset fingerprint")
    try:
        fingerprint = DatasetFingerprint.from_dict(raw)
    except ValueError as e:
        return Rejected(name, None, f"unreadable fingerprint: {e}")
    score, reasons = similarity(current, fingerprint)
    if past.directions != study.directions:
        return Rejected(name, score, f"direction {_direction(past)} != {_direction(study)}")
    trials = _own_finished_trials(past, maximize=_direction(study) == "maximize")
    if not trials:
        return Rejected(name, score, "no COMPLETE trial with a finite value")
    if score < min_similarity:
        why = "; ".join(reasons)
        return Rejected(name, score, f"similarity {score:.2f} < {min_similarity:g}: {why}")
    return _Candidate(name, score, reasons, fingerprint, trials)


def _direction(study) -> str:
    return ",".join(d.name.lower() for d in study.directions)


def _own_finished_trials(study, maximize: bool) -> list:
    """Finished trials the study evaluated itself, best first.

    Trials it copied from another study are left out: they were measured on that
    study's data, and the original is read directly when it is similar enough.
    """
    from optuna.trial import TrialState

    trials = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.value is not None and math.isfinite(t.value) and COPIED_FROM not in t.user_attrs
    ]
    return sorted(trials, key=lambda t: (-t.value if maximize else t.value, t.number))


def _seeded_keys(study) -> set[tuple[str, str, int]]:
    """(kind, source study, source trial) of everything already seeded into `study`."""
    keys = set()
    for t in study.get_trials(deepcopy=False):
        for kind in (COPIED_FROM, SUGGESTED_BY):
            if kind in t.user_attrs:
                keys.add((kind, t.user_attrs[kind], t.user_attrs.get(SOURCE_TRIAL)))
    return keys


def _copy_trials(
    study, c: _Candidate, distributions: dict, limit: int, already: set, final_step: int
) -> int:
    """Add up to `limit` of `c`'s trials as PRUNED copies (see the module docstring)."""
    from optuna.trial import TrialState, create_trial

    new, used = [], 0
    for t in c.trials:
        if used >= limit:
            break
        if not all(
            k in distributions and _contains(distributions[k], v) for k, v in t.params.items()
        ):
            continue
        used += 1
        if (COPIED_FROM, c.name, t.number) in already:
            continue
        new.append(
            create_trial(
                state=TrialState.PRUNED,
                params=t.params,
                # The current distributions, so the sampler models one space.
                distributions={k: distributions[k] for k in t.params},
                intermediate_values={final_step: t.value},
                user_attrs={
                    COPY_MARK: True,
                    COPIED_FROM: c.name,
                    SOURCE_TRIAL: t.number,
                    COPY_VALUE: t.value,
                },
            )
        )
    study.add_trials(new)
    return used


def _enqueue_best(study, c: _Candidate, distributions: dict, limit: int, already: set) -> int:
    """Queue up to `limit` of `c`'s best parameter sets (clipped) for evaluation here.

    Points this study already evaluates or queued are not queued twice; copied trials
    do not count as evaluated (their values are the past data's)."""
    from optuna.trial import TrialState

    queued_or_run = [
        t.system_attrs.get("fixed_params", t.params)
        for t in study.get_trials(deepcopy=False)
        if COPIED_FROM not in t.user_attrs and t.state != TrialState.FAIL
    ]
    used = 0
    for t in c.trials:
        if used >= limit:
            break
        if (SUGGESTED_BY, c.name, t.number) in already:
            used += 1
            continue
        params = _clip_params(t.params, distributions)
        if not params or params in queued_or_run:
            continue
        study.enqueue_trial(params, user_attrs={SUGGESTED_BY: c.name, SOURCE_TRIAL: t.number})
        queued_or_run.append(params)
        used += 1
    return used


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _contains(dist, value: Any) -> bool:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        return value in dist.choices
    if not _is_number(value) or not dist.low <= value <= dist.high:
        return False
    if isinstance(dist, FloatDistribution):
        if dist.step is None:
            return True
        k = (value - dist.low) / dist.step
        return abs(k - round(k)) < 1e-8  # Optuna's own tolerance for stepped floats
    if isinstance(dist, IntDistribution):
        return value == int(value) and (int(value) - dist.low) % dist.step == 0
    return False


def _clip_params(params: dict, distributions: dict) -> dict:
    """Params moved into the current space; those that cannot be are left to the sampler."""
    out = {}
    for name, value in params.items():
        if name in distributions:
            clipped = _clip(distributions[name], value)
            if clipped is not _DROP:
                out[name] = clipped
    return out


def _clip(dist, value: Any) -> Any:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        return value if value in dist.choices else _DROP
    if not _is_number(value):
        return _DROP
    if isinstance(dist, FloatDistribution):
        v = min(max(float(value), dist.low), dist.high)
        if dist.step is not None:
            v = min(dist.low + round((v - dist.low) / dist.step) * dist.step, dist.high)
        return v
    if isinstance(dist, IntDistribution):
        v = min(max(round(value), dist.low), dist.high)
        v = dist.low + round((v - dist.low) / dist.step) * dist.step
        return v - dist.step if v > dist.high else v
    return _DROP
