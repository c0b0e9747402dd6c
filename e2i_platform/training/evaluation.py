"""How good a model is, measured on the test split, with the decision threshold chosen
on validation (never on test).

ROC-AUC, PR-AUC (average precision), Brier score, precision and recall at the
threshold, ROC-AUC per region (regions too small or with one class are listed with
why, not compared) and the p95 wall time to score a batch of rows on one core, whose
CPU time is also the scoring cost per 1M rows; the ROC, precision-recall and calibration
curves (`training.curves`) for the release report. What the model cost to produce (the
steps that ran its study and trained it) and its size on disk are here too: the cost
gate reads them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

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


def scoring_latency(predict_one_core, X: pd.DataFrame, rows: int, repeats: int, seed: int) -> dict:
    """Wall time (ms, p50/p95) of `predict_one_core` (scoring with one thread) on a batch
    of `rows` test rows, `repeats` times; and from the same calls the scoring cost per 1M
    rows: CPU seconds of this thread (where one-thread scoring runs) and wall seconds."""
    batch = X.sample(n=rows, replace=len(X) < rows, random_state=seed)
    predict_one_core(batch)  # warm-up: first call pays one-time costs
    times, cpu = [], []
    for _ in range(repeats):
        cpu_started, started = time.thread_time(), time.perf_counter()
        predict_one_core(batch)
        times.append((time.perf_counter() - started) * 1000)
        cpu.append(time.thread_time() - cpu_started)
    scored = rows * repeats
    return {
        "batch_rows": rows,
        "repeats": repeats,
        "threads": 1,
        "p50_ms": round(float(np.percentile(times, 50)), 3),
        "p95_ms": round(float(np.percentile(times, 95)), 3),
        "per_million_rows": {
            "cpu_seconds": round(sum(cpu) / scored * 1e6, 3),
            "wall_seconds": round(sum(times) / 1000 / scored * 1e6, 3),
            "rows_scored": scored,
            "clock": "CPU time of the scoring thread (time.thread_time), one thread",
        },
    }


def evaluate(
    predict,
    data,
    min_region_rows: int,
    latency_rows: int,
    repeats: int,
    seed: int,
    predict_one_core=None,
):
    """Every metric the promotion gates read. `predict(X) -> probabilities`;
    `predict_one_core` the same scores on one thread, for the timed batches (default
    `predict`, when the model scores on one thread anyway)."""
    from sklearn.metrics import (
        average_precision_score,
        brier_score_loss,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    from e2i_platform.training.curves import evaluation_curves

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
        "latency": scoring_latency(
            predict_one_core or predict, data.X["test"], latency_rows, repeats, seed
        ),
        # ROC, precision-recall and calibration points, for the release report.
        "curves": evaluation_curves(y, score),
    }


STEP_SECONDS = "step_seconds"  # lib.step_cost: the step's wall seconds, in its metadata
HPO_POINTER = "dagster/input_event_pointer/hpo_study"  # the study a training step read


def _materializations(instance, asset: str, page: int = 100, most: int = 1000):
    """The asset's materialization records, newest first (at most `most`)."""
    import dagster as dg

    cursor, seen = None, 0
    while seen < most:
        found = instance.fetch_materializations(dg.AssetKey(asset), limit=page, cursor=cursor)
        yield from found.records
        seen += len(found.records)
        if not found.has_more:
            return
        cursor = found.cursor


def _meta(record, key: str):
    value = record.asset_materialization.metadata.get(key)
    if value is None:
        return None
    return getattr(value, "value", value)


def _producing_training(instance, variant: Path, sha: str | None):
    """The trained_model materialization that trained the files of `variant` (not a
    reuse of them), known by its spec, exec and variant; with `sha`, one whose data
    version is that model's."""
    for record in _materializations(instance, "trained_model"):
        spec, exec_ = _meta(record, "spec_fingerprint"), _meta(record, "exec_fingerprint")
        action, number = _meta(record, "action"), _meta(record, "variant")
        if action in (None, "reuse") or spec is None or exec_ is None:
            continue
        if (variant.parent.name, variant.name) != (
            f"spec-{spec[:8]}_exec-{exec_[:8]}",
            f"v{number}",
        ):
            continue
        version = record.asset_materialization.tags.get("dagster/data_version")
        if sha is None or (version and sha.startswith(version)):
            return record
    return None


def _study_cost(instance, pointer: str | None) -> dict:
    """Wall seconds of the hpo_study steps that ran the trials of the study a training
    step read (a new study, then each resumption), up to that step."""
    import dagster as dg

    if not pointer:
        return {"measured": False, "why": "the training step recorded no hpo_study input"}
    storage_id = int(pointer)
    found = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("hpo_study"), storage_ids=[storage_id]),
        limit=1,
    ).records
    if not found:
        return {"measured": False, "why": f"hpo_study materialization {storage_id} not found"}
    study = _meta(found[0], "study")
    runs = []
    for record in _materializations(instance, "hpo_study"):
        if record.storage_id > storage_id or _meta(record, "study") != study:
            continue
        if _meta(record, "decision") in ("new", "resumed"):
            runs.append(
                {
                    "run_id": record.run_id,
                    "decision": _meta(record, "decision"),
                    "seconds": _meta(record, STEP_SECONDS),
                }
            )
    if not runs or any(r["seconds"] is None for r in runs):
        return {
            "measured": False,
            "study": study,
            "why": f"no hpo_study step that ran study {study}'s trials has step_seconds "
            "in this instance's event log",
            "runs": runs,
        }
    return {
        "measured": True,
        "study": study,
        "seconds": round(sum(r["seconds"] for r in runs), 3),
        "runs": runs,
        "read_by_training": {"run_id": found[0].run_id, "decision": _meta(found[0], "decision")},
    }


def production_cost(instance, home, trained: dict, run_id: str) -> dict:
    """Wall seconds of the steps that produced the trained model: the hpo_study steps
    that ran its study's trials and the trained_model step that trained it (and, for a
    model boosted on from a previous one, that one's too, down the chain). A reused
    study or model costs what it cost when it was produced: each part names the run
    that produced it. A part not found in this instance's event log makes the cost
    unmeasured, never 0. `home`: the models' store the record's paths are relative to
    (`training.model_run.model_store`: the home, or the object store)."""
    from e2i_platform.lib.home_paths import resolve, stored
    from e2i_platform.training.run_files import VARIANT_LAYOUT

    parts, problems = [], []
    variant = resolve(home, trained["path"], VARIANT_LAYOUT, "trained_model: path")
    sha = trained["model_sha256"]
    for _ in range(50):  # a continue_from_previous chain, newest first
        record = _producing_training(instance, variant, sha)
        if hasattr(home, "fs"):  # the object store: a resolved variant is one of it
            shown = stored(home, variant)
        else:
            shown = (
                variant.relative_to(home).as_posix() if variant.is_relative_to(home) else variant
            )
        if record is None:
            problems.append(f"no trained_model step that trained {shown} in this instance")
            break
        training = _meta(record, STEP_SECONDS)
        if training is None:
            problems.append(f"the trained_model step of run {record.run_id} has no step_seconds")
        study = _study_cost(instance, record.asset_materialization.tags.get(HPO_POINTER))
        if not study["measured"]:
            problems.append(f"hpo_study for {shown}: {study['why']}")
        parts.append(
            {
                "model": str(shown),
                "action": _meta(record, "action"),
                "trained_in_run": record.run_id,
                "how": "trained in this run"
                if record.run_id == run_id
                else f"produced earlier: the cost of run {record.run_id} then",
                "training_seconds": training,
                "hpo": study,
            }
        )
        previous = (
            json.loads((variant / "metadata.json").read_text()).get("previous")
            if _meta(record, "action") == "continue"
            else None
        )
        if not previous:
            break
        variant, sha = resolve(home, previous, VARIANT_LAYOUT, f"{shown}: previous"), None
    if problems:
        return {"measured": False, "why": "; ".join(problems), "parts": parts}
    # A chain boosted on under one study paid for that study once.
    hpo = sum({p["hpo"]["study"]: p["hpo"]["seconds"] for p in parts}.values())
    training = sum(p["training_seconds"] for p in parts)
    return {
        "measured": True,
        "reused": trained["action"] == "reuse",
        "seconds": round(hpo + training, 3),
        "hpo_seconds": round(hpo, 3),
        "training_seconds": round(training, 3),
        "clock": "wall seconds of the steps (lib.step_cost step_seconds)",
        "parts": parts,
    }


def model_size(home, trained: dict) -> dict:
    """The files the trained model wrote (its variant directory), in bytes and MiB.
    `home`: the models' store (`training.model_run.model_store`: the home, or the object
    store, whose allocation marker is no file of the model)."""
    from e2i_platform.lib.home_paths import resolve
    from e2i_platform.training.run_files import ALLOCATED_MARKER, VARIANT_LAYOUT

    variant = resolve(home, trained["path"], VARIANT_LAYOUT, "trained_model: path")
    if not variant.is_dir():
        return {"measured": False, "why": f"{trained['path']} is not a directory of this home"}
    if hasattr(variant, "fs"):
        listed = variant.fs.ls(variant.path, detail=True, refresh=True)
        files = {
            name: int(entry["size"])
            for entry in sorted(listed, key=lambda e: e["name"])
            if entry.get("type") == "file"
            and (name := entry["name"].rpartition("/")[2]) != ALLOCATED_MARKER
        }
    else:
        files = {f.name: f.stat().st_size for f in sorted(variant.iterdir()) if f.is_file()}
    total = sum(files.values())
    return {
        "measured": bool(files),
        "path": trained["path"],
        "files": files,
        "bytes": total,
        "mb": round(total / 2**20, 4),
        **({} if files else {"why": f"{trained['path']} holds no files"}),
    }
