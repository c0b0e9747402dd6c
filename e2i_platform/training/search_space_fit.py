"""Past parameters against the current search space: whether a value lies in a
distribution (`contains`), and parameters moved into it (`clip_params`), for a warm
start from a study with another search-space version.

Optuna is imported inside functions so this module stays cheap to import.
"""

from __future__ import annotations

import math
from typing import Any

_DROP = object()  # a clipped value that does not fit the current space (None is a valid choice)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def contains(dist, value: Any) -> bool:
    """Whether `value` is a point of `dist`: one of its choices, or in range and on its step."""
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


def clip_params(params: dict, distributions: dict) -> dict:
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
