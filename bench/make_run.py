"""`make run` benchmarks: part of `make bench`; alone: `python bench/make_run.py`.

1. Cold: `make run` on a fresh E2I_HOME at the default size (embedded defaults),
   wall time and peak RSS of the process tree.
2. Unchanged re-run: `make run` again with nothing changed (same anchor, code,
   configuration and sources), as a share of the cold run; the re-run's own output
   must list every asset as reused.

The home is kept for the HPO benchmarks, which tune on its real training set.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def run_make(env: dict[str, str]) -> tuple[float, float, str]:
    """Wall seconds, peak tree RSS (MiB) and stdout of one `make run`."""
    from run import peak_tree_rss

    started = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(
            ["make", "-s", "run"], cwd=REPO, env=env, stdout=out, stderr=subprocess.DEVNULL
        )
        peak = peak_tree_rss(proc, 0.05)
        wall = time.perf_counter() - started
        out.seek(0)
        text = out.read().decode()
    if proc.returncode != 0:
        raise RuntimeError(f"make run failed ({proc.returncode}):\n{text[-3000:]}")
    return wall, peak / 2**20, text


def bench_make_run(home: Path) -> list[dict]:
    from run import clean_env

    from e2i_platform.ingest.spec import floor_anchor

    # One anchor for both runs: a run that crossed the hour would see new sources.
    anchor = floor_anchor(datetime.now(UTC).replace(tzinfo=None), "hour")
    env = clean_env(E2I_HOME=str(home), E2I_ANCHOR=anchor.isoformat())
    cold_s, cold_mib, cold_out = run_make(env)
    materialized = int(re.search(r"Assets materialized \((\d+)\)", cold_out).group(1))
    again_s, again_mib, again_out = run_make(env)
    if "nothing to run, every asset is up to date" not in again_out:
        raise RuntimeError(f"the unchanged re-run ran something:\n{again_out[-3000:]}")
    reused = int(re.search(r"Assets reused \((\d+)", again_out).group(1))
    share = again_s / cold_s
    return [
        {
            "benchmark": f"cold `make run`, default size ({materialized} assets, every gate)",
            "value": f"{cold_s:.1f} s / {cold_mib:.0f} MiB",
            "ratio": "1.00x",
            "target": f"<= 30 s, <= 1 GiB ({'met' if cold_s <= 30 and cold_mib <= 1024 else 'NOT met'})",
        },
        {
            "benchmark": f"unchanged re-run of `make run` ({reused} assets reused, each listed)",
            "value": f"{again_s:.1f} s / {again_mib:.0f} MiB",
            "ratio": f"{share:.1%}",
            "target": f"<= 3 s ({'met' if again_s <= 3 else 'NOT met'})",
        },
    ]


def main() -> int:
    from run import print_table

    with tempfile.TemporaryDirectory(prefix="e2i-bench-run-") as tmp:
        print_table(bench_make_run(Path(tmp)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
