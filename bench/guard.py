"""The gates' own cost on a real `make run` home: part of `make bench` (after the cold
run, which provides the instance); alone: `python bench/guard.py HOME`.

For every gated asset of the cold run: the guard's work (judging every blocking check
on its upstream assets: the batched materialization query, each check's latest
evaluation, the configuration versions, the publication records) against the wall
time of the asset's own step in that run. The guard runs once per step (the IO
manager and the body share its result), so this ratio is its whole extra cost.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _step_seconds(instance, run_id: str) -> dict[str, float]:
    return {
        s.step_key: s.end_time - s.start_time
        for s in instance.get_run_step_stats(run_id)
        if s.end_time and s.start_time
    }


def bench_guard(home: Path, repeat: int = 7) -> list[dict]:
    import dagster as dg

    os.environ["E2I_HOME"] = str(home)
    os.environ["DAGSTER_HOME"] = str(home / "dagster")
    from e2i_platform.definitions import build_definitions
    from e2i_platform.lib.gates import verdicts_for
    from e2i_platform.lib.graph import blocking_checks
    from e2i_platform.settings import load_settings

    settings = load_settings()
    defs = build_definitions(settings)
    graph = defs.resolve_asset_graph()
    with dg.DagsterInstance.get() as instance:
        cold = instance.get_runs(
            limit=1, filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.SUCCESS])
        )
        steps = _step_seconds(instance, cold[0].run_id)
        ratios, guard_total, step_total = [], 0.0, 0.0
        for key in graph.toposorted_asset_keys:
            name = key.to_user_string()
            upstream = graph.get(key).parent_keys
            checks = blocking_checks(graph, upstream)
            if not checks or name not in steps:
                continue
            times = []
            for _ in range(repeat):
                started = time.perf_counter()
                verdicts = verdicts_for(instance, graph, settings, checks)
                times.append(time.perf_counter() - started)
            if not all(v.passed for v in verdicts):
                raise RuntimeError(f"{name}: a gate does not hold after the cold run: {verdicts}")
            guard = statistics.median(times)
            ratios.append((guard / steps[name], name, guard, steps[name], len(checks)))
            guard_total += guard
            step_total += steps[name]
    worst = max(ratios)
    share = guard_total / step_total
    return [
        {
            "benchmark": f"guard per gated step, worst ({worst[1]}: {worst[4]} gates)",
            "value": f"{worst[2] * 1000:.1f} ms vs step {worst[3]:.2f} s",
            "ratio": f"{worst[0]:.1%}",
            "target": f"< 5% ({'met' if worst[0] < 0.05 else 'NOT met'})",
        },
        {
            "benchmark": f"guard over all {len(ratios)} gated steps of the cold run",
            "value": f"{guard_total * 1000:.0f} ms vs steps {step_total:.1f} s",
            "ratio": f"{share:.2%}",
            "target": f"< 5% ({'met' if share < 0.05 else 'NOT met'})",
        },
    ]


def main() -> int:
    from run import print_table

    print_table(bench_guard(Path(sys.argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
