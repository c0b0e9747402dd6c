"""The release report: one self-contained HTML file next to each release manifest,
`releases/<release_id>/report.html` (`lib.releases.report_path`), that a person opens
in a browser -- inline CSS and inline SVG figures, no script, nothing fetched.

It is a pure function of the manifest and of the manifests it names (the previous
release, and for a rollback or repair the restored one, `related_manifests`): the
gate table (observed value against limit for the five promotion gates, pass/fail of
every other blocking gate), ROC, precision-recall and calibration curves of the model
and of the champion it was compared with on the same test rows, ROC-AUC per region,
the metrics beside the previous release's, data and feature versions, the MLflow run
and model version, the code version; for a rollback or repair what was restored,
from which release, why, and by which run. A manifest written before curves were
recorded gets a report that says so. Sections: `release_report_sections`.
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

from e2i_platform.promotion import release_figures as figures
from e2i_platform.promotion import release_report_sections as sections

if TYPE_CHECKING:
    from upath import UPath

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px;
  color: #222; max-width: 1200px; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 18px; margin-top: 28px;
  border-bottom: 1px solid #ddd; padding-bottom: 4px; } h3 { font-size: 15px; }
table { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.pass { color: #11691a; font-weight: bold; } .fail { color: #b00020; font-weight: bold; }
.unknown { color: #7a5b00; font-weight: bold; }
.notice { background: #fff6d6; border: 1px solid #e6cf7a; padding: 8px 12px; }
.figures { display: flex; flex-wrap: wrap; gap: 12px; }
.figures svg { border: 1px solid #ddd; }
.meta { color: #555; font-size: 13px; } code { font-size: 12px; }
"""


def release_evaluation(model_evaluation: dict) -> dict:
    """What of `model_evaluation` the manifest keeps for the report: the model's curves
    and regional ROC-AUC on the test rows, and the champion's on the same rows."""
    champion = model_evaluation.get("champion", {})
    return {
        "test_rows": model_evaluation.get("test_rows"),
        "test_prevalence": model_evaluation.get("test_prevalence"),
        "threshold": model_evaluation.get("threshold"),
        "model": {
            "curves": model_evaluation.get("curves")
            or {"recorded": False, "why": "the evaluation recorded no curves"},
            "region_auc": model_evaluation.get("region_auc", {}),
        },
        "champion": {
            **{
                k: champion.get(k)
                for k in ("exists", "release_id", "comparable", "roc_auc_same_test", "why")
                if k in champion
            },
            **model_evaluation.get("champion_curves", {}),
        },
    }


def related_manifests(store: Path | UPath, manifest: dict) -> dict[str, dict | str]:
    """The manifests this release names (previous, restored, rolled back), verified, each
    by release id; a manifest that cannot be used maps to why (never an exception: the
    report says what it could not read)."""
    from e2i_platform.lib.releases import check_manifest

    out: dict[str, dict | str] = {}
    for key in ("previous_release", "restores_release", "rolled_back_release"):
        release_id = manifest.get(key)
        if release_id and release_id not in out:
            check = check_manifest(store, release_id)
            out[release_id] = check.manifest if check.problem is None else check.status
    return out


def render_release_report(manifest: dict, related: dict[str, dict | str]) -> str:
    """The report's HTML for `manifest`, with `related` from `related_manifests`."""
    release_id = str(manifest.get("release_id", "(no release id)"))
    kind = str(manifest.get("kind", "promotion"))
    restored = related.get(manifest.get("restores_release") or "")
    # A rollback or repair carries the restored release's gates; its curves are in the
    # restored release's own manifest.
    evidence_from = manifest if kind == "promotion" else restored
    evaluation = evidence_from.get("evaluation") if isinstance(evidence_from, dict) else None
    body = [
        f"<h1>Release {escape(release_id)}</h1>",
        f'<p class="meta">kind <b>{escape(kind)}</b> &middot; created '
        f"{escape(str(manifest.get('created_at', 'unknown')))}"
        + (
            f" &middot; decision {escape(str(manifest['decision']))}"
            if "decision" in manifest
            else ""
        )
        + "</p>",
    ]
    parts = [
        ("what was restored", lambda: sections.restored(manifest, restored))
        if kind != "promotion"
        else None,
        ("gate results", lambda: sections.gates(manifest)),
        ("curves", lambda: figures.curves(evaluation, manifest, restored)),
        ("ROC-AUC per region", lambda: figures.regions(evaluation)),
        (
            "comparison with the previous champion",
            lambda: sections.comparison(
                manifest, related.get(manifest.get("previous_release") or "")
            ),
        ),
        ("data and feature versions", lambda: sections.versions(manifest)),
        ("model", lambda: sections.model(manifest)),
    ]
    body += [_section(name, make) for name, make in filter(None, parts)]
    body.append(
        '<p class="meta">Written with the release from its manifest.json (same directory); '
        "self-contained: nothing is fetched.</p>"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>Release {escape(release_id)} ({escape(kind)})</title>\n"
        f"<style>{CSS}</style>\n</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n"
    )


def _section(name: str, make) -> str:
    """A section, or -- when the manifest's data cannot be drawn (a value of the wrong
    type in an old or hand-edited manifest) -- a notice saying which section and why,
    in its place: a rollback or repair is never stopped by its report."""
    try:
        return make()
    except Exception as exc:  # any malformed value; the report says what it was
        return (
            f'<section class="unrendered"><h2>{escape(name.capitalize())}</h2>'
            f'<p class="notice">This section could not be drawn from the manifest: '
            f"{escape(type(exc).__name__)}: {escape(str(exc)[:300])}</p></section>"
        )


def release_report(store: Path | UPath, manifest: dict) -> str:
    """The report of `manifest`, reading the manifests it names from the releases of
    `store` (a home, or the object store: `lib.releases.release_store`)."""
    return render_release_report(manifest, related_manifests(store, manifest))
