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


def single_machine(home: Path) -> tuple[float, float, float]:
    """Wall seconds, peak RSS (MiB) and the machine's CPU seconds of a cold `make run`."""
    from make_run import run_make
    from run import clean_env

    env = clean_env(E2I_HOME=str(home), E2I_PATIENTS=PATIENTS)
    before = machine_cpu()
    wall, peak, _ = run_make(env)
    return wall, peak, machine_cpu() - before


def machine_cpu() -> float:
    """CPU seconds this machine spent working so far (every process, all cores)."""
    import psutil

    t = psutil.cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq


def cpu_by_part(workers: dict) -> dict[str, float]:
    """CPU seconds used so far by each part of the one-machine cluster: the workers, the
    launcher (this process: code server and run worker, exited children included), the
    S3 server, the MLflow server, PostgreSQL and Redis (every process of theirs)."""
    import psutil

    def used(proc, exited: bool = False) -> float:
        try:
            t = proc.cpu_times()
        except psutil.Error:
            return 0.0
        return t.user + t.system + ((t.children_user + t.children_system) if exited else 0)

    def tree(proc) -> list:
        try:
            return [proc, *proc.children(recursive=True)]
        except psutil.Error:
            return []

    parts = {"workers": 0.0, "launcher": 0.0, "S3 server": 0.0, "MLflow server": 0.0}
    parts |= {"PostgreSQL": 0.0, "Redis": 0.0}
    worker_pids = {p.pid for w in workers.values() for p in tree(psutil.Process(w.pid))}
    for pid in worker_pids:
        parts["workers"] += used(psutil.Process(pid))
    me = psutil.Process()
    parts["launcher"] += used(me, exited=True)
    for child in me.children(recursive=True):
        if child.pid in worker_pids:
            continue
        cmd = " ".join(child.cmdline()) if child.is_running() else ""
        key = "S3 server" if "moto" in cmd else "MLflow server" if "mlflow" in cmd else "launcher"
        parts[key] += used(child)
    for proc in psutil.process_iter(["name"]):
        name = proc.info["name"] or ""
        if name.startswith("postgres"):
            parts["PostgreSQL"] += used(proc)
        elif name.startswith("redis"):
            parts["Redis"] += used(proc)
    return parts


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
                    cpu_before = cpu_by_part(c.workers)
                    machine_before = machine_cpu()
                    started = time.perf_counter()
                    run_id = launch(instance, context, location, assets, {}, {}, in_process=False)
                    wait(instance, run_id, sample)
                    wall = time.perf_counter() - started
                    cpu_after = cpu_by_part(c.workers)
                    machine_used = machine_cpu() - machine_before
                run = instance.get_run_by_id(run_id)
                if run.status != dg.DagsterRunStatus.SUCCESS:
                    raise RuntimeError(f"distributed run {run_id} ended {run.status}")
                steps: dict[str, int] = {}
                times: dict[str, dict[str, float]] = {}
                for record in instance.all_logs(run_id):
                    event = record.dagster_event
                    if not event or not record.step_key:
                        continue
                    at = times.setdefault(record.step_key, {})
                    if event.is_engine_event and "Submitting celery task" in (record.message or ""):
                        at["submitted"] = record.timestamp
                    elif event.event_type_value == "STEP_START":
                        at["started"] = record.timestamp
                    elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
                        at["ended"] = record.timestamp
                    if event.is_engine_event:
                        worker = event.engine_event_data.metadata.get("Celery worker")
                        if worker is not None:  # the task began on a worker
                            at["in_worker"] = record.timestamp
                            name = worker.value.split("@")[0]
                            steps[name] = steps.get(name, 0) + 1
            phases = {"submitted", "in_worker", "started", "ended"}
            timed = [t for t in times.values() if phases <= set(t)]
            where = {
                # submitted by the run worker -> the step started on a worker (queue, task
                # start-up, instance and resources)
                "mean_pickup_s": round(
                    sum(t["started"] - t["submitted"] for t in timed) / len(timed), 2
                ),
                # of which: waiting in the queue (for a free worker) until the task began,
                # and the task's own start (instance, run, plan; resources) until the step
                "mean_queued_s": round(
                    sum(t["in_worker"] - t["submitted"] for t in timed) / len(timed), 2
                ),
                "mean_task_start_s": round(
                    sum(t["started"] - t["in_worker"] for t in timed) / len(timed), 2
                ),
                "steps_s": round(sum(t["ended"] - t["started"] for t in timed), 1),
                "steps": len(timed),
            }
            cpu = {k: round(cpu_after[k] - cpu_before[k], 1) for k in cpu_after}
            cpu["machine"] = round(machine_used, 1)
            return wall, peak / 2**20, steps | where | {"cpu_s": cpu}
    finally:
        os.environ.clear()
        os.environ.update(saved)


def bench_distributed() -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="e2i-bench-dist-") as tmp:
        base_wall, base_peak, base_cpu = single_machine(Path(tmp) / "single")
        wall, peak, steps = two_workers(Path(tmp) / "cluster")
    return [
        {
            "bench": "distributed",
            "case": f"make run, one machine ({PATIENTS} patients)",
            "wall_s": round(base_wall, 1),
            "peak_mib": round(base_peak),
            "cpu_s": round(base_cpu, 1),
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
