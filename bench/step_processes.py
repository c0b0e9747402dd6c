"""Step processes: part of `make bench` (`--only steps`); alone:
`python bench/step_processes.py`.

The UI's kind of run of the whole graph: the main job with the multiprocess executor,
two steps at once, cold, each measurement on its own empty home with the same anchor
(the same generated sources, every asset really runs, nothing is reused):

1. baseline: Dagster's default start method, `spawn`: every step a fresh interpreter
   that imports the code location and the libraries it uses;
2. the job's own config (`ops.execution.multiprocess_config`): every step forked from a
   fork server that imported `STEP_MODULES` once for the run.

Wall seconds of the run's process, the seconds inside its steps, how long the first step
waited to start, and the peak memory of the process tree: summed RSS, and summed PSS
(a forked step shares the server's pages, which RSS counts once per process).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))


def _one_run(method: str) -> dict:
    import dagster as dg
    from dagster._core.definitions.reconstruct import ReconstructableJob

    from e2i_platform.ops.execution import multiprocess_config

    executor = multiprocess_config(2) if method == "forkserver" else {"max_concurrent": 2}
    # The main job as bench/hpo_workers.py gives it to every step process.
    job = ReconstructableJob.for_file(str(REPO / "bench" / "hpo_workers.py"), "main_job")
    with dg.DagsterInstance.get() as instance:
        result = dg.execute_job(
            job,
            instance=instance,
            run_config={"execution": {"config": {"multiprocess": executor}}},
            raise_on_error=False,
        )
        stats = instance.get_run_step_stats(result.run_id)
        record = instance.get_run_record_by_id(result.run_id)
        created = record.create_timestamp.timestamp()
    if not result.success:
        raise RuntimeError(f"{method}: the run failed ({result.run_id})")
    return {
        "steps": len(stats),
        "in_steps_s": round(sum(s.end_time - s.start_time for s in stats), 1),
        "first_step_s": round(min(s.start_time for s in stats) - created, 1),
    }


def _tree_memory(proc: subprocess.Popen) -> tuple[int, int]:
    """Wait for `proc`; the peak summed RSS and summed PSS (bytes) of its process tree."""
    import psutil

    peak_rss = peak_pss = 0
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        infos = []
        with contextlib.suppress(psutil.Error):
            for p in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):  # a step that just ended
                    infos.append(p.memory_full_info())
        peak_rss = max(peak_rss, sum(i.rss for i in infos))
        peak_pss = max(peak_pss, sum(i.pss for i in infos))
        time.sleep(0.2)
    return peak_rss, peak_pss


def measure(home: Path, method: str, anchor: datetime) -> dict:
    from run import clean_env, run_watched

    env = clean_env(
        E2I_HOME=str(home), DAGSTER_HOME=str(home / "dagster"), E2I_ANCHOR=anchor.isoformat()
    )
    (home / "dagster").mkdir(parents=True)
    with tempfile.NamedTemporaryFile("r", suffix=".json") as out:
        wall, (rss, pss) = run_watched(
            [sys.executable, __file__, "--one", method, "--out", out.name], env, _tree_memory
        )
        row = json.loads(Path(out.name).read_text())
    return row | {"wall_s": round(wall, 1), "rss_mib": rss >> 20, "pss_mib": pss >> 20}


def bench_step_processes() -> list[dict]:
    anchor = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    with tempfile.TemporaryDirectory(prefix="e2i-bench-steps-") as tmp:
        spawn = measure(Path(tmp) / "spawn", "spawn", anchor)
        fork = measure(Path(tmp) / "forkserver", "forkserver", anchor)
    print(json.dumps({"spawn": spawn, "forkserver": fork}), flush=True)

    def value(r: dict) -> str:
        return (
            f"{r['wall_s']:.1f} s, {r['in_steps_s']:.1f} s in {r['steps']} steps, first step "
            f"at {r['first_step_s']:.1f} s, {r['pss_mib']} MiB PSS ({r['rss_mib']} MiB RSS)"
        )

    return [
        {
            "benchmark": "whole graph, UI run (multiprocess, 2 at once), spawn: baseline",
            "value": value(spawn),
            "ratio": "1.00x",
            "target": "baseline",
        },
        {
            "benchmark": "whole graph, UI run, steps forked from the preloaded server",
            "value": value(fork),
            "ratio": f"{spawn['wall_s'] / fork['wall_s']:.2f}x faster, "
            f"{fork['pss_mib'] / spawn['pss_mib']:.2f}x PSS",
            "target": "faster than spawn",
        },
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a child: one run
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        Path(args.out).write_text(json.dumps(_one_run(args.one)))
        return 0
    from run import print_table

    print_table(bench_step_processes())
    return 0


if __name__ == "__main__":
    sys.exit(main())
