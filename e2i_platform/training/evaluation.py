"""How good a model is, measured on the test split, with the decision threshold chosen
on validation (never on test).

ROC-AUC, PR-AUC (average precision), Brier score, precision and recall at the
threshold, ROC-AUC per region (regions too small or with one class are listed with
why, not compared) and the p95 wall time to score a batch of rows.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd


def choose_threshold(y, score) -> dict:
    """The threshold that maximises F1 on validation (ties: the higher threshold)."""
    from sklearn.metrics import precision_recall_curve

    precision, recall, thresholds = precision_recall_curve(y, score)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)[:-1]
    if len(thresholds) == 0:
        return {"threshold": 0.5, "validation_f1": 0.0, "rule": "max F1 on validation"}
    best = int(np.flatnonzero(f1 == f1.max())[-1])
    return {
        "threshold": float(thresholds[best]),
        "validation_f1": round(float(f1[best]), 6),
        "rule": "max F1 on validation",
    }


def region_auc(y: pd.Series, score: np.ndarray, region: pd.Series, min_rows: int) -> dict:
    from sklearn.metrics import roc_auc_score

    out = {}
    for name in sorted(region.dropna().unique()):
        mask = (region == name).to_numpy()
        labels = y.to_numpy()[mask]
        entry = {"rows": int(mask.sum()), "positives": int(labels.sum())}
        if mask.sum() < min_rows:
            entry["compared"], entry["why"] = False, f"fewer than {min_rows} rows"
        elif labels.min() == labels.max():
            entry["compared"], entry["why"] = False, "one class only"
        else:
            entry["compared"] = True
            entry["roc_auc"] = round(float(roc_auc_score(labels, score[mask])), 6)
        out[str(name)] = entry
    return out


def scoring_latency(predict, X: pd.DataFrame, rows: int, repeats: int, seed: int) -> dict:
    """p50/p95 wall time (ms) of `predict` on a batch of `rows` test rows."""
    batch = X.sample(n=rows, replace=len(X) < rows, random_state=seed)
    predict(batch)  # warm-up: first call pays one-time costs
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        predict(batch)
        times.append((time.perf_counter() - started) * 1000)
    return {
        "batch_rows": rows,
        "repeats": repeats,
        "p50_ms": round(float(np.percentile(times, 50)), 3),
        "p95_ms": round(float(np.percentile(times, 95)), 3),
    }


def evaluate(predict, data, min_region_rows: int, latency_rows: int, repeats: int, seed: int):
    """Every metric the promotion gates read. `predict(X) -> probabilities`."""
    from sklearn.metrics import (
        average_precision_score,
        brier_score_loss,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    threshold = choose_threshold(data.y["validation"], predict(data.X["validation"]))
    y, score = data.y["test"], predict(data.X["test"])
    predicted = (score >= threshold["threshold"]).astype(int)
    regions = region_auc(y, score, data.frame["test"]["region"], min_region_rows)
    compared = [r["roc_auc"] for r in regions.values() if r["compared"]]
    return {
        "test_rows": int(len(y)),
        "test_prevalence": round(float(y.mean()), 6),
        "roc_auc": round(float(roc_auc_score(y, score)), 6),
        "pr_auc": round(float(average_precision_score(y, score)), 6),
        "brier": round(float(brier_score_loss(y, score)), 6),
        "threshold": threshold,
        "precision_at_threshold": round(float(precision_score(y, predicted, zero_division=0)), 6),
        "recall_at_threshold": round(float(recall_score(y, predicted, zero_division=0)), 6),
        "region_auc": regions,
        "region_auc_gap": round(max(compared) - min(compared), 6) if len(compared) > 1 else None,
        "latency": scoring_latency(predict, data.X["test"], latency_rows, repeats, seed),
    }
