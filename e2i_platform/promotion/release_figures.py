"""The figure sections of the release report (`promotion.release_report`): ROC,
precision-recall and calibration curves of the model and of the champion it was compared
with on the same test rows, and ROC-AUC per region, drawn as inline SVG
(`promotion.release_svg`) from the curve points the manifest keeps (`training.curves`)."""

from __future__ import annotations

from e2i_platform.promotion import release_svg as svg
from e2i_platform.promotion.release_report_html import e, notice, num, section, table


def _curve_sets(evaluation: dict | None) -> list[tuple[str, dict]]:
    if not evaluation:
        return []
    out = []
    model = (evaluation.get("model") or {}).get("curves") or {}
    if model.get("recorded"):
        out.append(("model", model))
    champion = evaluation.get("champion") or {}
    if (champion.get("curves") or {}).get("recorded"):
        out.append(("champion", champion["curves"]))
    return out


def curves(evaluation: dict | None, manifest: dict, restored_manifest) -> str:
    sets = _curve_sets(evaluation)
    if not sets:
        why = ((evaluation or {}).get("model") or {}).get("curves", {}).get("why")
        return section(
            "curves",
            "ROC, precision-recall and calibration curves",
            notice(
                "Curves were not recorded for this release: "
                + (why or "its manifest was written before curve data was kept.")
            ),
        )
    source = (
        ""
        if manifest.get("kind", "promotion") == "promotion"
        else notice(
            f"Curves of restored release {manifest.get('restores_release')}, from its own manifest."
        )
    )
    roc = [(f"{n} AUC {c['roc']['auc']:.3f}", c["roc"]["fpr"], c["roc"]["tpr"]) for n, c in sets]
    pr = [
        (
            f"{n} AP {c['precision_recall']['average_precision']:.3f}",
            c["precision_recall"]["recall"],
            c["precision_recall"]["precision"],
        )
        for n, c in sets
    ]
    cal = [
        (n, c["calibration"]["mean_predicted"], c["calibration"]["fraction_positive"])
        for n, c in sets
    ]
    rows = sets[0][1]
    return section(
        "curves",
        "ROC, precision-recall and calibration curves",
        source,
        f'<p class="meta">Test rows {num(rows.get("rows"))}, positives '
        f"{num(rows.get('positives'))}"
        + ("; the champion scored on the same rows" if len(sets) > 1 else "")
        + ".</p>",
        '<div class="figures">',
        svg.line_chart(
            "ROC", "roc", roc, "false positive rate", "true positive rate", diagonal=True
        ),
        svg.line_chart(
            "Precision-recall", "precision_recall", pr, "recall", "precision", legend_bottom=True
        ),
        svg.line_chart(
            "Calibration",
            "calibration",
            cal,
            "mean predicted probability",
            "fraction positive",
            diagonal=True,
            markers=True,
            legend_bottom=False,
        ),
        "</div>",
    )


def regions(evaluation: dict | None) -> str:
    model = ((evaluation or {}).get("model") or {}).get("region_auc") or {}
    if not model:
        return section(
            "regions",
            "ROC-AUC per region",
            notice("Per-region ROC-AUC was not recorded for this release."),
        )
    champion = ((evaluation or {}).get("champion") or {}).get("region_auc") or {}
    names = sorted(model)
    series = [("model", [model[r].get("roc_auc") for r in names])]
    if champion:
        series.append(("champion", [champion.get(r, {}).get("roc_auc") for r in names]))
    rows = [
        [
            e(r),
            num(model[r].get("rows")),
            num(model[r].get("positives")),
            num(model[r].get("roc_auc")),
            num(champion.get(r, {}).get("roc_auc")),
            e(model[r].get("why", "")),
        ]
        for r in names
    ]
    return section(
        "regions",
        "ROC-AUC per region",
        '<div class="figures">',
        svg.bar_chart("ROC-AUC per region", "region_auc", names, series, "ROC-AUC"),
        "</div>",
        table(
            ["Region", "Rows", "Positives", "Model ROC-AUC", "Champion ROC-AUC", "Not compared"],
            rows,
            id="region-table",
        ),
    )
