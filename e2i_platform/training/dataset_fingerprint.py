"""What a study was tuned on, and how alike two of those are.

Every study records a fingerprint of the data it was tuned on (user attribute
`FINGERPRINT_ATTR`): rows, feature names and their dtypes' hash, class balance,
algorithm, problem type and search-space version. The warm start
(`training.warm_start`) scores every past study against the new one's fingerprint.

Similarity is 0 when the algorithm or the problem type differs. Otherwise it is a
weighted sum of four components, each in [0, 1]:

- feature set, 0.35: Jaccard index of the feature names (1 when the name:dtype
  hashes are identical);
- size, 0.35: max(0, 1 - |log10(rows / past_rows)|), so a 10x change scores 0;
- class balance, 0.2: 1 - |p - p'| / max(p, p');
- search space, 0.1: 1 for the same version, 0.5 otherwise.

With the default threshold of 0.7, a disjoint feature set or a 10x size change
(each at most 0.65) is enough to reject a study on its own.

numpy is imported inside `dataset_fingerprint` so this module stays cheap to import.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

FINGERPRINT_ATTR = "e2i_fingerprint"

WEIGHTS = {"features": 0.35, "size": 0.35, "balance": 0.2, "search_space": 0.1}


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
