"""The table sections of the release report (`promotion.release_report`), one function
each, from the manifest's plain JSON; every value is escaped, every missing one is said.
The figure sections are `promotion.release_figures`."""

from __future__ import annotations

from e2i_platform.promotion.release_report_html import e, notice, num, section, table, verdict

PROMOTION_GATES = ("quality_gate", "calibration_gate", "latency_gate", "fairness_gate", "cost_gate")
EVALUATED = "model_evaluation"
# Where an old manifest (gates without observed/limit) still has the observed value.
METRIC_OF_GATE = {
    "quality_gate": "roc_auc",
    "calibration_gate": "brier",
    "latency_gate": "p95_ms",
    "fairness_gate": "region_auc_gap",
}


def restored(manifest: dict, restored_manifest) -> str:
    kind = manifest.get("kind")
    rows = [
        ["Restored release", e(manifest.get("restores_release", "not recorded"))],
        ["Reason", e(manifest.get("reason", "not recorded"))],
        ["Restored model", f"<code>{e(manifest.get('model', {}).get('model_sha256'))}</code>"],
        ["Restored manifest", e(manifest.get("restored_manifest_verification", "not recorded"))],
    ]
    if kind == "rollback":
        rows.insert(2, ["Rolled back release", e(manifest.get("rolled_back_release"))])
    if kind == "repair":
        replaced = manifest.get("replaced_current") or {}
        rows.insert(
            2, ["Replaced CURRENT", e(f"{replaced.get('release_id')}: {replaced.get('problem')}")]
        )
        for entry in manifest.get("set_aside", []):
            rows.append(["Set aside", e(f"{entry.get('release_id')}: {entry.get('problem')}")])
    who = manifest.get("requested_by") or {}
    rows += [
        ["Dagster run", e(who.get("dagster_run_id") or "not recorded in the manifest")],
        ["OS user", e(who.get("os_user") or "not recorded in the manifest")],
    ]
    if isinstance(restored_manifest, str):
        rows.append(["Restored release's manifest", e(f"cannot be read: {restored_manifest}")])
    verb = {"rollback": "rolled back", "repair": "repaired"}.get(kind, kind)
    return section(
        "restored",
        "What was restored, and why",
        f'<p>This release {e(verb)} to release <b class="restored-release">'
        f"{e(manifest.get('restores_release'))}</b>: "
        f'<span class="reason">{e(manifest.get("reason"))}</span></p>',
        table(["", "Value"], rows, id="restored-table"),
    )


def measure_rows(gate: str, entry: dict, metrics: dict) -> tuple[list[str], list[str]]:
    """(observed, limit) lines of one promotion gate: the gate's own recorded values, or
    for a manifest from before they were kept, the metric it judged and no limit."""
    measures = entry.get("measures") or {}
    observed, limits = [], []
    for key, value in measures.items():
        if not key.startswith("observed_"):
            continue
        name = key.removeprefix("observed_")
        for prefix, sign in (("threshold_max_", "&le;"), ("threshold_min_", "&ge;")):
            if prefix + name in measures:
                limit = f"{sign} {num(measures[prefix + name])}"
                break
        else:
            floor = measures.get("threshold_" + name)
            limit = "not recorded" if floor is None else f"&ge; {num(floor)}"
        observed.append(f"{e(name)} {num(value)}")
        limits.append(f"{e(name)} {limit}")
    if not observed and gate in METRIC_OF_GATE:
        metric = METRIC_OF_GATE[gate]
        observed = [f"{e(metric)} {num(metrics.get(metric))}"]
    if not limits:
        limits = ["not recorded (manifest written before gate limits were kept)"]
    return observed, limits


def _other_gate(key: str, entry: dict) -> list[str]:
    """A blocking gate outside the promotion gates. One still planned when the release
    was made (the scores' schema gate runs after the release, in the same run) judged
    nothing the release stands on: said so, not shown as a gate that did not hold."""
    if entry.get("passed") is None and entry.get("status") == "PLANNED":
        return [
            e(key),
            verdict(None),
            e("not yet"),
            e(
                "planned in the release's run, after the release: it judges what the release "
                "produces, not what it stands on"
            ),
        ]
    return [
        e(key),
        verdict(entry.get("passed")),
        e({True: "yes", False: "no"}.get(entry.get("holds"), "unknown")),
        e(entry.get("summary") or entry.get("status") or ""),
    ]


def gates(manifest: dict) -> str:
    recorded = manifest.get("gates") or {}
    metrics = manifest.get("metrics") or {}
    rows = []
    for gate in PROMOTION_GATES:
        entry = recorded.get(f"{EVALUATED}.{gate}") or {}
        observed, limits = measure_rows(gate, entry, metrics)
        rows.append(
            [
                f'<td class="gate" data-gate="{e(gate)}">{e(gate)}</td>',
                verdict(entry.get("passed")),
                '<td class="observed num">' + "<br>".join(observed) + "</td>",
                '<td class="limit num">' + "<br>".join(limits) + "</td>",
                e(entry.get("summary") or entry.get("status") or "not recorded"),
            ]
        )
    others = [
        _other_gate(key, entry)
        for key, entry in sorted(recorded.items())
        if key.removeprefix(f"{EVALUATED}.") not in PROMOTION_GATES
    ]
    judged = (
        ""
        if manifest.get("kind", "promotion") == "promotion"
        else notice(
            f"As judged when release {manifest.get('restores_release')} was promoted "
            "(a restore copies the gates of the release it restores)."
        )
    )
    return section(
        "gates",
        "Gate results",
        judged,
        "<h3>Promotion gates: observed against limit</h3>",
        table(["Gate", "Result", "Observed", "Limit", "Summary"], rows, id="gate-table"),
        "<h3>Every other blocking gate</h3>",
        table(["Check", "Result", "Held at release", "Summary"], others, id="blocking-gates")
        if others
        else notice("No other gate results recorded."),
    )


def comparison(manifest: dict, previous) -> str:
    title = "Comparison with the previous champion"
    previous_id = manifest.get("previous_release")
    if not previous_id:
        return section("comparison", title, notice("No previous release: this is the first."))
    if not isinstance(previous, dict):
        return section(
            "comparison",
            title,
            notice(f"Previous release {previous_id}'s manifest cannot be read: {previous}."),
        )
    ours, theirs = manifest.get("metrics") or {}, previous.get("metrics") or {}
    rows = []
    for metric in sorted(set(ours) | set(theirs)):
        a, b = ours.get(metric), theirs.get(metric)
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (a, b))
        delta = f"{a - b:+.4f}" if numeric else "&mdash;"
        rows.append(
            [
                e(metric),
                '<td class="num">' + num(a) + "</td>",
                '<td class="num">' + num(b) + "</td>",
                f'<td class="num">{delta}</td>',
            ]
        )
    champion = ((manifest.get("evaluation") or {}).get("champion")) or {}
    same_test = (
        f"<p>On the same test rows: this model ROC-AUC {num(ours.get('roc_auc'))}, champion "
        f"{e(champion.get('release_id'))} {num(champion.get('roc_auc_same_test'))}.</p>"
        if champion.get("comparable")
        else ""
    )
    return section(
        "comparison",
        title,
        f"<p>Previous release <b>{e(previous_id)}</b> ({e(previous.get('kind', 'promotion'))}, "
        f"model <code>{e(str(previous.get('model', {}).get('model_sha256'))[:12])}</code>); "
        "each release's metrics on its own test split.</p>",
        table(
            ["Metric", "This release", f"Previous {previous_id}", "Delta"],
            rows,
            id="comparison-table",
        ),
        same_test,
    )


def versions(manifest: dict) -> str:
    data = manifest.get("data_versions") or {}
    rows = [
        [e(asset), f"<code>{e(v.get('data_version'))}</code>", e(v.get("run_id"))]
        for asset, v in sorted(data.items())
        if isinstance(v, dict)
    ]
    features = manifest.get("features") or {}
    service = features.get("feature_service") or {}
    views = [
        [e(view), num(len(columns)), e(", ".join(columns))]
        for view, columns in sorted((service.get("views") or {}).items())
    ]
    return section(
        "versions",
        "Data and feature versions",
        table(["Asset", "Data version", "Run"], rows, id="data-versions")
        if rows
        else notice("No data versions recorded."),
        f"<p>Feature service <b>{e(service.get('name', 'not recorded'))}</b>, feature registry "
        f"hash <code>{e(features.get('registry_hash', 'not recorded'))}</code></p>",
        table(["Feature view", "Features", "Columns"], views, id="feature-views") if views else "",
    )


def registered(tracked: dict) -> str:
    if tracked.get("model_version") is None:
        return "not registered (trained with tracking off)"
    name = tracked.get("registered_model", "(name not recorded)")
    return f"{name} version {tracked['model_version']}"


def alias_move(alias: dict) -> str:
    if not alias:
        return "not recorded"
    if not alias.get("moved"):
        return f"not moved (tracking {alias.get('tracking', 'off')})"
    return (
        f"{alias.get('alias')} of {alias.get('registered_model')} moved from version "
        f"{alias.get('from_version')} to {alias.get('to_version')}"
    )


def model(manifest: dict) -> str:
    model = manifest.get("model") or {}
    tracked = model.get("mlflow") or {}
    alias = manifest.get("mlflow_alias") or {}
    rows = [
        ["Model sha256", f"<code>{e(model.get('model_sha256'))}</code>"],
        ["Model file", e(model.get("model_file"))],
        ["MLflow run", e(tracked.get("run_id") or f"tracking {tracked.get('tracking', 'off')}")],
        ["Registered model / version", e(registered(tracked))],
        ["Champion alias", e(alias_move(alias))],
        ["Code version", f"<code>{e(manifest.get('code_version'))}</code>"],
        ["Dagster run", e(manifest.get("dagster_run_id") or "not recorded")],
    ]
    params = manifest.get("params") or {}
    return section(
        "model",
        "Model, MLflow run and code",
        table(["", "Value"], rows, id="model-table"),
        table(
            ["Parameter", "Value"], [[e(k), num(v)] for k, v in sorted(params.items())], id="params"
        )
        if params
        else "",
    )
