"""Warm start for Optuna studies: seed a new study from similar past studies.

A new study scores every other study in its storage against its own dataset
fingerprint (`training.dataset_fingerprint`: what it was tuned on, and the
similarity score) and seeds itself only from those at or above `min_similarity`,
because trials from a dissimilar study can steer the sampler somewhere worse than a
cold start. What it did is recorded on the study (`training.warm_start_plan`).

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
  parameters clipped to the current space (`training.search_space_fit`).

Optuna is imported inside functions so this module stays cheap to import.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from e2i_platform.training.dataset_fingerprint import (
    FINGERPRINT_ATTR,
    DatasetFingerprint,
    similarity,
)
from e2i_platform.training.dataset_fingerprint import (
    dataset_fingerprint as dataset_fingerprint,  # bench/hpo.py imports it from here
)
from e2i_platform.training.search_space_fit import clip_params, contains
from e2i_platform.training.warm_start_plan import Rejected, SeedSource, WarmStartPlan

if TYPE_CHECKING:
    from e2i_platform.settings.models import WarmStartSettings

WARM_START_ATTR = "warm_start"
# User attributes of seeded trials: which study and trial they came from.
COPIED_FROM = "warm_start_from"
COPY_MARK = "warm_start_copy"  # True on a copied trial (PRUNED here: it never ranks as best)
COPY_VALUE = "warm_start_value"  # the copied trial's value, measured on the source study's data
SUGGESTED_BY = "warm_start_suggested_by"
SOURCE_TRIAL = "warm_start_trial"


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
            k in distributions and contains(distributions[k], v) for k, v in t.params.items()
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
        params = clip_params(t.params, distributions)
        if not params or params in queued_or_run:
            continue
        study.enqueue_trial(params, user_attrs={SUGGESTED_BY: c.name, SOURCE_TRIAL: t.number})
        queued_or_run.append(params)
        used += 1
    return used
