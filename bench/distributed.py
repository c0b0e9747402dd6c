"""Two workers vs one machine: part of `make bench`; alone: `python bench/distributed.py`.

Baseline: a cold `make run` on a fresh local home (embedded defaults: SQLite, the
in-process executor, everything on this disk). Measured: the same graph at the same
size on the several-machines deployment of tests/cluster.py (PostgreSQL, Redis, a moto
S3 server, an MLflow server) with two `make worker` processes of concurrency 1, each
with an empty scratch HOME and E2I_HOME; launch to end of run. Both on this one
machine's cores: the figure is the cost of going distributed (services, object store,
a task per step), not a speed-up from more hardware.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

PATIENTS = os.environ.get("E2I_BENCH_DIST_PATIENTS", "5000")


def single_machine(home: Path) -> tuple[float, float]:
    from make_run import run_make
    from run import clean_env

    env = clean_env(E2I_HOME=str(home), E2I_PATIENTS=PATIENTS)
    wall, peak, _ = run_make(env)
    return wall, peak


def two_workers(root: Path) -> tuple[float, float, dict[str, int]]:
    """Wall seconds of the run, peak RSS (MiB) of the workers' trees, steps per worker."""
    import dagster as dg
    import psutil
    from cluster import cluster

    sizes = {"E2I_PATIENTS": PATIENTS, "E2I_HCPS": "400", "E2I_SEED": "20261123"}
    saved = dict(os.environ)
    try:
        with cluster(root, sizes) as c:
            os.environ.clear()
            os.environ.update(c.machine_env("launcher"))
            from e2i_platform.ops.instance import prepare_instance
            from e2i_platform.ops.launch import code_location, launch, wait
            from e2i_platform.ops.location import load_definitions
            from e2i_platform.settings import load_settings

            settings = load_settings()
            home = prepare_instance(settings)
            os.environ["DAGSTER_HOME"] = str(home)
            assets = sorted(load_definitions().resolve_asset_graph().get_all_asset_keys())
            c.start_worker("w1")
            c.start_worker("w2")
            c.wait_ready()
            peak = 0

            def sample():
                nonlocal peak
                total = 0
                for proc in c.workers.values():
                    try:
                        tree = psutil.Process(proc.pid)
                        total += sum(p.memory_info().rss for p in [tree, *tree.children(True)])
                    except psutil.Error:
                        pass
                peak = max(peak, total)

            with dg.DagsterInstance.from_config(str(home)) as instance:
                with code_location(instance) as (context, location):
                    started = time.perf_counter()
                    run_id = launch(instance, context, location, assets, {}, {}, in_process=False)
                    wait(instance, run_id, sample)
                    wall = time.perf_counter() - started
                run = instance.get_run_by_id(run_id)
                if run.status != dg.DagsterRunStatus.SUCCESS:
                    raise RuntimeError(f"distributed run {run_id} ended {run.status}")
                steps: dict[str, int] = {}
                for record in instance.all_logs(run_id):
                    event = record.dagster_event
                    if event and event.is_engine_event:
                        worker = event.engine_event_data.metadata.get("Celery worker")
                        if worker is not None:
                            name = worker.value.split("@")[0]
                            steps[name] = steps.get(name, 0) + 1
            return wall, peak / 2**20, steps
    finally:
        os.environ.clear()
        os.environ.update(saved)


def bench_distributed() -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="e2i-bench-dist-") as tmp:
        base_wall, base_peak = single_machine(Path(tmp) / "single")
        wall, peak, steps = two_workers(Path(tmp) / "cluster")
    return [
        {
            "bench": "distributed",
            "case": f"make run, one machine ({PATIENTS} patients)",
            "wall_s": round(base_wall, 1),
            "peak_mib": round(base_peak),
        },
        {
            "bench": "distributed",
            "case": f"two Celery workers, shared services ({PATIENTS} patients)",
            "wall_s": round(wall, 1),
            "peak_mib": round(peak),
            "ratio_vs_one_machine": round(wall / base_wall, 2),
            "steps_per_worker": steps,
        },
    ]


if __name__ == "__main__":
    import json

    print(json.dumps(bench_distributed(), indent=2))
