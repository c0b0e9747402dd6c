"""The curves behind the test metrics, kept small enough for a release manifest: ROC and
precision-recall (points of sklearn's own curves, thinned to at most `MAX_POINTS`, both
ends kept), and calibration (sklearn's uniform bins, with the rows in each bin).

Plain floats rounded to 6 digits, so the release report (`promotion.release_report`)
draws them from the manifest alone, long after the model and its test rows are gone.
"""

from __future__ import annotations

import numpy as np

MAX_POINTS = 101
CALIBRATION_BINS = 10
DIGITS = 6


def thin(n: int, most: int = MAX_POINTS) -> np.ndarray:
    """At most `most` indices of a curve of `n` points, evenly spaced along it, both ends
    included."""
    if n <= most:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, most).round().astype(int))


def _floats(values) -> list[float]:
    return [round(float(v), DIGITS) for v in values]


def roc_points(y, score) -> dict:
    from sklearn.metrics import roc_auc_score, roc_curve

    fpr, tpr, _ = roc_curve(y, score)
    keep = thin(len(fpr))
    return {
        "fpr": _floats(fpr[keep]),
        "tpr": _floats(tpr[keep]),
        "auc": round(float(roc_auc_score(y, score)), DIGITS),
        "points_before_thinning": int(len(fpr)),
    }


def precision_recall_points(y, score) -> dict:
    from sklearn.metrics import average_precision_score, precision_recall_curve

    precision, recall, _ = precision_recall_curve(y, score)
    keep = thin(len(precision))
    return {
        "recall": _floats(recall[keep]),
        "precision": _floats(precision[keep]),
        "average_precision": round(float(average_precision_score(y, score)), DIGITS),
        "points_before_thinning": int(len(precision)),
    }


def calibration_points(y, score, bins: int = CALIBRATION_BINS) -> dict:
    """sklearn's `calibration_curve` (uniform bins over [0, 1]; empty bins dropped), with
    the number of test rows in each bin."""
    from sklearn.calibration import calibration_curve

    fraction, predicted = calibration_curve(y, score, n_bins=bins, strategy="uniform")
    # sklearn's own binning: edges over [0, 1], a score equal to an inner edge goes left.
    edges = np.linspace(0.0, 1.0, bins + 1)
    counts = np.bincount(np.searchsorted(edges[1:-1], score), minlength=bins)
    return {
        "strategy": "uniform",
        "bins": bins,
        "mean_predicted": _floats(predicted),
        "fraction_positive": _floats(fraction),
        "rows": [int(c) for c in counts if c > 0],
    }


def evaluation_curves(y, score) -> dict:
    """ROC, precision-recall and calibration of `score` against the labels `y`."""
    y = np.asarray(y).astype(int)
    score = np.asarray(score, dtype=float)
    if y.min() == y.max():
        return {"recorded": False, "why": "the test rows hold one class only"}
    return {
        "recorded": True,
        "rows": int(len(y)),
        "positives": int(y.sum()),
        "roc": roc_points(y, score),
        "precision_recall": precision_recall_points(y, score),
        "calibration": calibration_points(y, score),
    }
