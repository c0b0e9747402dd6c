"""Releases with real evaluation evidence, for the release report's tests (unit and
browser): a scorer evaluated by `training.evaluation.evaluate` on synthetic rows with
regions, the champion's curves as `training.model_run` records them, gate results as
`promotion.assets` records them (the real quality and cost verdicts), published with
`promotion.release.promote`; and `Page`, what a test reads from a report's HTML."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from e2i_platform.lib.releases import current_release
from e2i_platform.promotion.checks import cost_verdict, quality_verdict
from e2i_platform.promotion.release import new_release_id, promote
from e2i_platform.promotion.release_report import release_evaluation
from e2i_platform.resources.mlflow import MlflowResource
from e2i_platform.training.curves import evaluation_curves
from e2i_platform.training.evaluation import evaluate, region_auc
from e2i_platform.training.model_data import ModelData

OFF = MlflowResource(
    enabled=False, tracking_uri="sqlite:///unused.db", experiment="e", registered_model="m"
)
REGIONS = ("northeast", "south", "midwest", "west")


def model_evaluation(seed: int, noise: float, champion_noise: float | None) -> dict:
    """A real evaluation (`training.evaluation.evaluate`) of a scorer on synthetic rows
    with regions, and the champion's curves as `training.model_run` records them."""
    rng = np.random.default_rng(seed)
    splits = {"validation": 600, "test": 1600}
    X = {
        s: pd.DataFrame(rng.normal(size=(n, 3)), columns=["f0", "f1", "f2"])
        for s, n in splits.items()
    }
    y = {
        s: pd.Series((x["f0"] - x["f2"] + rng.normal(size=len(x)) > 1).astype(int))
        for s, x in X.items()
    }
    frame = {s: pd.DataFrame({"region": rng.choice(REGIONS, size=len(x))}) for s, x in X.items()}
    data = ModelData(["f0", "f1", "f2"], [], {}, X, y, frame)

    def scorer(noise_level, salt):
        def predict(x):
            jitter = np.random.default_rng(salt).normal(size=len(x)) * noise_level
            return 1 / (1 + np.exp(-(x["f0"] - x["f2"] + jitter - 1).to_numpy()))

        return predict

    record = evaluate(scorer(noise, 1), data, 30, latency_rows=50, repeats=3, seed=0)
    record["champion"] = {"exists": False}
    if champion_noise is not None:
        score = scorer(champion_noise, 2)(X["test"])
        record["champion"] = {
            "exists": True,
            "release_id": "set by the caller",
            "comparable": True,
            "same_model": False,
            "roc_auc_same_test": round(float(roc_auc_score(y["test"], score)), 6),
        }
        record["champion_curves"] = {
            "curves": evaluation_curves(y["test"], score),
            "region_auc": region_auc(y["test"], score, frame["test"]["region"], 30),
        }
    record["cost"] = {
        "production": {"measured": True, "seconds": 12.5},
        "model_size": {"measured": True, "mb": 0.4},
        "scoring": {"cpu_seconds": 3.2},
    }
    return record


def gate_entry(result) -> dict:
    """A check result as `promotion.assets._gate_results` records it in the manifest."""
    measures = {
        k: getattr(v, "value", v)
        for k, v in result.metadata.items()
        if k.startswith(("observed_", "threshold_"))
    }
    return {
        "holds": True,
        "passed": result.passed,
        "severity": result.severity.value,
        "summary": result.description,
        "measures": measures,
    }


def gates_of(evaluation: dict) -> dict:
    limits = SimpleNamespace(
        max_production_seconds=3600, max_model_mb=50, max_scoring_cpu_seconds_per_million=60
    )
    hand = {  # the other three gates' own keys (promotion.checks)
        "calibration_gate": {"observed_brier": evaluation["brier"], "threshold_max_brier": 0.2},
        "latency_gate": {
            "observed_p95_ms": evaluation["latency"]["p95_ms"],
            "threshold_max_p95_ms": 250,
        },
        "fairness_gate": {
            "observed_gap": evaluation["region_auc_gap"],
            "threshold_max_gap": 0.15,
        },
    }
    gates = {
        "model_evaluation.quality_gate": gate_entry(quality_verdict(evaluation, 0.65, 0.02)),
        "model_evaluation.cost_gate": gate_entry(cost_verdict(evaluation, limits)),
        **{
            f"model_evaluation.{name}": {"passed": True, "summary": f"{name} ok", "measures": m}
            for name, m in hand.items()
        },
        "training_dataset.no_leakage": {"passed": True, "holds": True, "summary": "no leak"},
        "online_features.freshness": {"passed": False, "holds": False, "summary": "<stale>"},
        "patient_risk_scores.schema": {"passed": None, "holds": False, "status": "PLANNED"},
    }
    return gates


def promote_evaluated(home: Path, name: str, evaluation: dict) -> dict:
    model = home / "models" / name / "model.txt"
    model.parent.mkdir(parents=True, exist_ok=True)
    model.write_text(name)
    current = current_release(home)
    if current is not None:
        evaluation["champion"]["release_id"] = current["release_id"]
    manifest = {
        "release_id": new_release_id("promotion"),
        "kind": "promotion",
        "created_at": "now",
        "model": {
            "model_file": f"models/{name}/model.txt",
            "model_sha256": f"sha-{name}",
            "mlflow": {"tracking": "on", "run_id": f"run-{name}", "model_version": "3"},
        },
        "params": {"learning_rate": 0.05, "rounds": 120},
        "metrics": {k: evaluation[k] for k in ("roc_auc", "pr_auc", "brier")},
        "data_versions": {"training_dataset": {"data_version": "dv-1", "run_id": "r-1"}},
        "features": {
            "feature_service": {"name": "discontinuation_model_v1", "views": {"pv": ["a:float"]}},
            "registry_hash": "abc123",
        },
        "gates": gates_of(evaluation),
        "code_version": "code-<1>",
        "dagster_run_id": "run-promote",
        "previous_release": current["release_id"] if current else None,
        "evaluation": release_evaluation(evaluation),
    }
    return promote(home, OFF, manifest)


class Page(HTMLParser):
    """What the tests read from a report: tables by id (rows of cells), headings, figures,
    the text, and any external reference."""

    def __init__(self, text: str):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.gate_rows: list[str] = []
        self.headings: list[str] = []
        self.figures: dict[str, dict[str, int]] = {}
        self.external: list[str] = []
        self.scripts = 0
        self._table = self._cell = self._heading = self._figure = None
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name in ("src", "href"):
            if attrs.get(name) and not attrs[name].startswith(("#", "data:")):
                self.external.append(attrs[name])
        if tag == "script":
            self.scripts += 1
        if tag == "table":
            self._table = attrs.get("id", "")
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = []
            if "data-gate" in attrs:
                self.gate_rows.append(attrs["data-gate"])
        elif tag in ("h1", "h2", "h3"):
            self._heading = []
        elif tag == "svg":
            self._figure = attrs.get("data-figure", "")
            self.figures[self._figure] = {}
        elif self._figure is not None:
            counts = self.figures[self._figure]
            mark = f"{tag}.{attrs['class']}" if "class" in attrs else tag  # rect.bar
            counts[mark] = counts.get(mark, 0) + 1

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[self._table][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "table":
            self._table = None
        elif tag in ("h1", "h2", "h3") and self._heading is not None:
            self.headings.append("".join(self._heading).strip())
            self._heading = None
        elif tag == "svg":
            self._figure = None

    def handle_data(self, data):
        self.text.append(data)
        for part in (self._cell, self._heading):
            if part is not None:
                part.append(data)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
