"""`make report`: what each step costs, how often it fails, is refused or reused, how
often each gate passes, and which gates fail now.

Read from the event log of the platform's instance (the one `make run` and `make dev`
use) over the runs created in a period (`--since`, default 7 days ago; `--until`,
default now). Per asset: runs, p50/p95 step time, failure, refusal and reuse rates. Per
gate: evaluations and pass rate. Then every check whose latest evaluation failed, with
how long it has been failing. `--json` prints the same figures as one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import textwrap
from datetime import UTC, datetime

import dagster as dg

from e2i_platform.ops.report_figures import (
    AssetFigures,
    Figures,
    GateFigures,
    collect,
    percentile,
    rate,
)

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")

# What each figure means: under the text tables, and in the JSON document.
TERMS = {
    "runs": "the asset's step started, in runs created in the period",
    "p50 s, p95 s": "percentiles of the wall time of its successful steps (Dagster's step "
    "events, STEP_START to STEP_SUCCESS); checks are steps of their own",
    "total s": "wall time of every started step, failed ones included",
    "failed": "the step failed (share of runs)",
    "refused": "the step failed because an upstream gate was closed: the guard's error "
    "carries closed_gates (share of runs)",
    "not run": "planned by a run that ended without starting it (a failing gate or step "
    "upstream in the same run stopped it, or the run ended first)",
    "reused": "make run kept the asset's last materialization instead of running it (code, "
    "configuration and inputs unchanged, gates holding; an observation with reused=true), "
    "or the step ran and reused finished work (materialization metadata reused=true: "
    "hpo_study kept a complete Optuna study, trained_model an existing model run); share of "
    "runs plus make run's reuses",
    "max MiB": "the highest step_peak_rss_mib of its materializations",
    "evaluated, pass rate": "every evaluation of the gate in the period (runs' and the "
    "freshness sensor's); pass rate = passed / evaluated",
    "not evaluated": "planned by a run that ended without evaluating it",
    "failing for": "since the first failing evaluation of the current streak of failures",
}


def parse_moment(text: str, now: float) -> float:
    """Epoch seconds of `7d`/`12h`/`30m`/`2w`/`90s` ago, or of an ISO date or time (UTC
    unless it says otherwise)."""
    if match := DURATION.match(text):
        return now - float(match[1]) * UNITS[match[2]]
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a duration ago (90s, 30m, 12h, 7d, 2w) nor an ISO date or "
            "time (2026-12-01, 2026-12-01T08:00, 2026-12-01T08:00+01:00)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M UTC")


def age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _share(count: int, whole: int) -> str:
    share = rate(count, whole)
    return str(count) if not count or share is None else f"{count} ({share:.0%})"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Fixed-width columns: the first left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells):
        first = cells[0].ljust(widths[0])
        return "  ".join([first, *(c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))])

    return [line(header), *(line(r) for r in rows)]


def asset_row(a: AssetFigures) -> list[str]:
    return [
        a.asset,
        str(a.planned),
        str(a.runs),
        _seconds(percentile(a.seconds, 50)),
        _seconds(percentile(a.seconds, 95)),
        f"{a.total_seconds:.2f}",
        _share(a.failed, a.runs),
        _share(a.refused, a.runs),
        str(a.not_run),
        _share(a.reused, a.runs + a.reused_by_make_run),
        f"{max(a.peak_rss_mib):.0f}" if a.peak_rss_mib else "-",
    ]


def gate_row(g: GateFigures) -> list[str]:
    share = rate(g.passed, g.evaluated)
    return [
        g.check,
        str(g.evaluated),
        str(g.passed),
        "-" if share is None else f"{share:.0%}",
        str(g.failed_error),
        str(g.failed_warn),
        str(g.not_evaluated),
        _seconds(percentile(g.seconds, 50)),
        _seconds(percentile(g.seconds, 95)),
    ]


def render_text(figures: Figures, instance_dir: str) -> str:
    out = [
        f"Run-cost report: runs created {when(figures.since)} to {when(figures.until)}",
        f"Instance: {instance_dir}",
    ]
    if figures.empty:
        out.append("No runs in the period (and no reuse or gate evaluation recorded).")
    else:
        statuses = ", ".join(f"{s.lower()} {n}" for s, n in figures.runs_by_status.items())
        out.append(f"Runs: {figures.runs}" + (f" ({statuses})" if statuses else ""))
        assets = [a for a in figures.assets if a.planned or a.runs or a.reused]
        header = "asset planned runs p50_s p95_s total_s failed refused not_run reused max_MiB"
        out += ["", "Assets"]
        out += _table([h.replace("_", " ") for h in header.split()], [asset_row(a) for a in assets])
        gates = [g for g in figures.gates if g.evaluated or g.not_evaluated]
        header = "check evaluated passed pass_rate fail_ERROR fail_WARN not_evaluated p50_s p95_s"
        out += ["", "Gates"]
        out += _table([h.replace("_", " ") for h in header.split()], [gate_row(g) for g in gates])
    out += ["", "Failing now (the latest evaluation of every check of the code location):"]
    if not figures.failing:
        out.append("  none")
    for f in figures.failing:
        out.append(
            f"  {f.severity:<5}  {f.check}  failing for {age(figures.now - f.since)} "
            f"(since {when(f.since)}, {f.evaluations} evaluation(s) in a row, latest "
            f"{'recorded by a sensor' if not f.run_id else 'in run ' + f.run_id[:8]})"
        )
        out.append(f"         {f.description}")
    if not figures.empty:
        out.append("")
        for term, meaning in TERMS.items():
            out += textwrap.wrap(f"{term}: {meaning}", width=88, subsequent_indent="    ")
    return "\n".join(out)


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def render_json(figures: Figures, instance_dir: str) -> dict:
    def asset(a: AssetFigures) -> dict:
        return {
            "asset": a.asset,
            "planned": a.planned,
            "runs": a.runs,
            "succeeded": a.succeeded,
            "failed": a.failed,
            "refused": a.refused,
            "not_run": a.not_run,
            "unfinished": a.unfinished,
            "reused": a.reused,
            "reused_by_make_run": a.reused_by_make_run,
            "reused_in_step": a.reused_in_step,
            "failure_rate": _round(rate(a.failed, a.runs), 4),
            "refusal_rate": _round(rate(a.refused, a.runs), 4),
            "reuse_rate": _round(a.reuse_rate, 4),
            "p50_seconds": _round(percentile(a.seconds, 50)),
            "p95_seconds": _round(percentile(a.seconds, 95)),
            "total_seconds": _round(a.total_seconds),
            "max_peak_rss_mib": max(a.peak_rss_mib) if a.peak_rss_mib else None,
        }

    def gate(g: GateFigures) -> dict:
        return {
            "check": g.check,
            "evaluated": g.evaluated,
            "passed": g.passed,
            "failed_error": g.failed_error,
            "failed_warn": g.failed_warn,
            "not_evaluated": g.not_evaluated,
            "pass_rate": _round(rate(g.passed, g.evaluated), 4),
            "p50_seconds": _round(percentile(g.seconds, 50)),
            "p95_seconds": _round(percentile(g.seconds, 95)),
        }

    iso = lambda epoch: datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")  # noqa: E731
    return {
        "instance": instance_dir,
        "since": iso(figures.since),
        "until": iso(figures.until),
        "generated_at": iso(figures.now),
        "runs": figures.runs,
        "runs_by_status": figures.runs_by_status,
        "assets": [asset(a) for a in figures.assets if a.planned or a.runs or a.reused],
        "gates": [gate(g) for g in figures.gates if g.evaluated or g.not_evaluated],
        "failing_gates": [
            {
                "check": f.check,
                "severity": f.severity,
                "description": f.description,
                "failing_since": iso(f.since),
                "age_seconds": round(figures.now - f.since, 1),
                "failing_evaluations": f.evaluations,
                "latest_run_id": f.run_id or None,
                "latest_at": iso(f.latest),
            }
            for f in figures.failing
        ],
        "definitions": TERMS,
    }


def main(argv: list[str] | None = None) -> int:
    intro, _, details = __doc__.partition("\n\n")
    parser = argparse.ArgumentParser(
        prog="make report", description=" ".join(intro.split()), epilog=" ".join(details.split())
    )
    parser.add_argument(
        "--since", default="7d", help="start of the period: 7d, 12h, 30m, 2w ago, or an ISO date"
    )
    parser.add_argument("--until", default=None, help="end of the period (same forms; now)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)
    now = datetime.now(UTC).timestamp()
    period = {}
    for flag in ("since", "until"):
        text = getattr(args, flag)
        try:
            period[flag] = now if text is None else parse_moment(text, now)
        except ValueError as error:
            parser.error(f"--{flag} {error}")
    if period["since"] >= period["until"]:
        parser.error(
            f"--since {args.since!r} ({when(period['since'])}) is not before "
            f"--until {args.until or 'now'!r} ({when(period['until'])})"
        )

    from e2i_platform.ops.instance import render_instance
    from e2i_platform.settings import load_settings

    settings = load_settings()
    # The instance `make run` uses; a report launches nothing, so it records no deployment
    # reference (the workers compare theirs with what launches runs).
    home = render_instance(settings)
    os.environ["DAGSTER_HOME"] = str(home)

    from e2i_platform.ops.location import load_definitions

    graph = load_definitions().resolve_asset_graph()
    assets = [k for k in graph.toposorted_asset_keys if graph.get(k).is_materializable]
    order = {k: i for i, k in enumerate(assets)}
    checks = sorted(graph.asset_check_keys, key=lambda k: (order.get(k.asset_key, 0), k.name))
    with dg.DagsterInstance.get() as instance:
        figures = collect(instance, assets, checks, period["since"], period["until"], now)
    if args.json:
        print(json.dumps(render_json(figures, str(home)), indent=2))
    else:
        print(render_text(figures, str(home)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
