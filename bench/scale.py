"""Scaling: cold `make run` at brand sizes; part of `make bench`, alone:
`python bench/run.py --only scale` (sizes: `--sizes 5000,20000`).

Each size runs in its own fresh E2I_HOME with HCPs in the default proportion
(400 per 5,000 patients); every other table scales with the patients. Reported per
size: wall time and cost per 1,000 patients, the peak RSS of the largest single
process, the gates (every one must pass), and per step the wall time and peak RSS
that the step recorded in its own materialization metadata (`lib.step_cost`).

At 20,000 patients (or the size nearest it) the training set's point-in-time join
(DuckDB ASOF joins) is also timed on that run's data against the join it replaced
(Feast's Dask file store, view by view), each in its own process, and their outputs
compared.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from run import clean_env, peak_tree_rss  # bench/ is on sys.path (script dir)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SIZES = (5_000, 20_000, 50_000, 100_000)
HCPS_PER_PATIENT = 400 / 5_000
JOIN_SIZE = 20_000
# Largest process at 20k patients, measured with the bounded code at 1.18-1.37 GiB
# (sampling and kernel high-water mark); a change that crosses this has lost the bound.
MID_SIZE_BOUND_MIB = 1536


def cold_run(patients: int, home: Path, anchor: str) -> dict:
    env = clean_env(
        E2I_HOME=str(home),
        E2I_PATIENTS=str(patients),
        E2I_HCPS=str(max(1, round(patients * HCPS_PER_PATIENT))),
        E2I_ANCHOR=anchor,
    )
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(["make", "-s", "run"], cwd=REPO, env=env, stdout=out, stderr=out)
        peak = peak_tree_rss(proc, 0.05, largest=True)
        wall = time.perf_counter() - started
        out.seek(0)
        text = out.read().decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"make run at {patients} patients failed:\n{text[-3000:]}")
    steps = step_costs(home)
    verdicts = re.findall(r"^  (PASS|FAIL \(\w+\))\s+(\S+):", text, flags=re.M)
    return {
        "patients": patients,
        "wall_s": round(wall, 1),
        # Sampling can miss a short peak; each step's kernel high-water mark cannot.
        "peak_process_mib": round(max(peak / 2**20, *(v["mib"] for v in steps.values()))),
        "gates_passed": sum(v == "PASS" for v, _ in verdicts),
        "gates_failed": [name for v, name in verdicts if v != "PASS"],
        "steps": steps,
    }


def step_costs(home: Path) -> dict[str, dict]:
    """Each asset's own step_seconds / step_peak_rss_mib from its latest materialization."""
    code = (
        "import json, dagster as dg\n"
        "with dg.DagsterInstance.get() as i:\n"
        "    out = {}\n"
        "    for key in i.get_asset_keys():\n"
        "        e = i.get_latest_materialization_event(key)\n"
        "        m = e.asset_materialization.metadata if e else {}\n"
        "        if 'step_seconds' in m:\n"
        "            out[key.to_user_string()] = {'s': m['step_seconds'].value,\n"
        "                'mib': m['step_peak_rss_mib'].value}\n"
        "    print(json.dumps(out))\n"
    )
    env = clean_env(DAGSTER_HOME=str(home / "dagster"))
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def join_comparison(home: Path) -> dict:
    """DuckDB vs Dask join on one run's data, each in its own process; outputs compared."""
    results = {}
    for kind in ("duckdb", "dask"):
        out = home / f"join_{kind}.parquet"
        cmd = [sys.executable, str(REPO / "bench" / "join.py"), kind, str(home), str(out)]
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, env=clean_env(E2I_HOME=str(home)))
        peak = peak_tree_rss(proc, 0.05, largest=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{kind} join failed")
        results[kind] = {
            "process_s": time.perf_counter() - started,
            "s": json.loads(out.with_suffix(".json").read_text())["join_s"],
            "mib": peak / 2**20,
            "out": out,
        }
    import pandas as pd

    new, old = (pd.read_parquet(results[k]["out"]) for k in ("duckdb", "dask"))
    pd.testing.assert_frame_equal(new, old, check_exact=True)
    return {
        k: {"s": round(v["s"], 1), "process_s": round(v["process_s"], 1), "mib": round(v["mib"])}
        for k, v in results.items()
    } | {"rows": len(new)}


def _top_steps(steps: dict, n: int = 3) -> str:
    top = sorted(steps.items(), key=lambda kv: -kv[1]["s"])[:n]
    return ", ".join(f"{k} {v['s']:.0f}s/{v['mib']:.0f}M" for k, v in top)


def bench_scale(sizes=SIZES) -> list[dict]:
    from e2i_platform.ingest.spec import floor_anchor

    anchor = floor_anchor(datetime.now(UTC).replace(tzinfo=None), "hour").isoformat()
    runs, join = [], None
    join_at = min(sizes, key=lambda s: abs(s - JOIN_SIZE))
    for patients in sizes:
        with tempfile.TemporaryDirectory(prefix=f"e2i-bench-scale-{patients}-") as tmp:
            result = cold_run(patients, Path(tmp), anchor)
            runs.append(result)
            print(json.dumps({k: v for k, v in result.items() if k != "steps"}), flush=True)
            if patients == join_at:
                join = join_comparison(Path(tmp))
                print(json.dumps({"join": join}), flush=True)
    rows = []
    for r in runs:
        per_k = r["wall_s"] / (r["patients"] / 1000)
        gates = "all pass" if not r["gates_failed"] else f"FAILED: {', '.join(r['gates_failed'])}"
        rows.append(
            {
                "benchmark": f"cold make run, {r['patients']:,} patients ({r['gates_passed']} gates, {gates})",
                "value": f"{r['wall_s']:.0f} s / {r['peak_process_mib']} MiB largest process",
                "ratio": f"{per_k:.2f} s per 1k patients",
                "target": _target(r),
                "steps": r["steps"],
            }
        )
        rows.append(
            {
                "benchmark": "  slowest steps (s / peak MiB)",
                "value": _top_steps(r["steps"]),
                "ratio": "",
                "target": "",
            }
        )
    big = [r for r in runs if r["patients"] >= 20_000]
    if len(big) >= 2:
        # The average cost per patient falls with size while a fixed cost (imports, feast
        # apply, a search whose budget does not grow) is spread over more patients; growth
        # is near-linear when each added 1,000 patients costs about the same.
        costs = [r["wall_s"] / r["patients"] for r in big]
        marginal = [
            (b["wall_s"] - a["wall_s"]) / ((b["patients"] - a["patients"]) / 1000)
            for a, b in zip(big, big[1:], strict=False)
        ]
        spread = max(marginal) / min(marginal) if min(marginal) > 0 else float("inf")
        rows.append(
            {
                "benchmark": f"cost per 1k patients, {big[0]['patients']:,} to {big[-1]['patients']:,}",
                "value": f"average {max(costs) * 1000:.2f} -> {min(costs) * 1000:.2f} s "
                f"(max/min {max(costs) / min(costs):.2f}); added 1k patients: "
                + ", ".join(f"{m:.2f} s" for m in marginal),
                "ratio": f"marginal max/min {spread:.2f}",
                "target": f"<= 1.5x ({'met' if spread <= 1.5 else 'NOT met'})",
            }
        )
    if join:
        speedup = join["dask"]["s"] / join["duckdb"]["s"]
        rows.append(
            {
                "benchmark": f"point-in-time join, {join_at:,} patients ({join['rows']:,} rows): Dask file store",
                "value": f"{join['dask']['s']:.1f} s ({join['dask']['process_s']:.0f} s with imports) / {join['dask']['mib']} MiB",
                "ratio": "1.00x",
                "target": "baseline",
            }
        )
        rows.append(
            {
                "benchmark": "  same join, the platform's (DuckDB ASOF; identical output)",
                "value": f"{join['duckdb']['s']:.1f} s ({join['duckdb']['process_s']:.0f} s with imports) / {join['duckdb']['mib']} MiB",
                "ratio": f"{speedup:.1f}x faster",
                "target": f">= 20x ({'met' if speedup >= 20 else 'NOT met'})",
            }
        )
    return rows


def _target(r: dict) -> str:
    if r["patients"] == 100_000:
        ok = r["wall_s"] <= 600 and r["peak_process_mib"] <= 3 * 1024 and not r["gates_failed"]
        return f"<= 600 s, <= 3 GiB ({'met' if ok else 'NOT met'})"
    if r["patients"] == 20_000:  # the memory-bound regression figure (mid size)
        ok = r["peak_process_mib"] <= MID_SIZE_BOUND_MIB and not r["gates_failed"]
        return f"<= {MID_SIZE_BOUND_MIB} MiB ({'met' if ok else 'NOT met'})"
    if r["patients"] == 5_000:
        ok = r["wall_s"] <= 30 and r["peak_process_mib"] <= 1024
        return f"<= 30 s, <= 1 GiB ({'met' if ok else 'NOT met'})"
    return ""


if __name__ == "__main__":
    from run import print_table

    sizes = tuple(int(s) for s in sys.argv[1].split(",")) if len(sys.argv) > 1 else SIZES
    print_table([{k: v for k, v in r.items() if k != "steps"} for r in bench_scale(sizes)])
