"""Alert latency under a real daemon: part of `make bench` (`--only alerts`); alone:
`python bench/alerts.py`.

A scratch home with a landing file that breaks the `schema` gate of raw_hcp_profiles
(a duplicate hcp_id); `dagster-daemon run` on its instance with the alert sensor at its
default interval; a local HTTP server as the JSON webhook. `make run --select
raw_hcp_profiles` is run `FAILURES` times (each a new failing materialization), then
once with the file removed (the recovery). Measured per alert: from the failing (or
passing) check evaluation's event-log timestamp to the webhook's receipt. Target: at
most one sensor interval plus the tick's own time. Also counted: duplicates (the same
materialization alerted twice) and recoveries (exactly one).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
FAILURES = 3
INTERVAL_S = 30  # config/alerts.yaml's default sensor_interval_seconds
WAIT_S = 3 * INTERVAL_S  # for one alert, before giving up


class Receiver:
    """The JSON webhook: every document with the moment it arrived."""

    def __init__(self):
        self.received: list[tuple[float, dict]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.received.append((time.time(), json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def wait_for(self, count: int, timeout: float) -> None:
        deadline = time.time() + timeout
        while len(self.received) < count and time.time() < deadline:
            time.sleep(0.2)
        if len(self.received) < count:
            raise RuntimeError(f"{count} alert(s) expected, {len(self.received)} arrived")


def _bad_landing(home: Path) -> Path:
    from e2i_platform.ingest.generator import Generator, GeneratorSpec, floor_anchor

    spec = GeneratorSpec(
        seed=11, patients=300, hcps=40, history_days=730,
        anchor=floor_anchor(datetime.now(UTC).replace(tzinfo=None), "none"),
    )  # fmt: skip
    hcps = Generator(spec).table("hcp_profiles").copy()
    hcps.loc[1, "hcp_id"] = hcps.loc[0, "hcp_id"]
    path = home / "landing" / "hcp_profiles.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    hcps.to_parquet(path, index=False)
    return path


def _evaluation_times(dagster_home: Path) -> list[tuple[float, bool]]:
    """(timestamp, passed) of every evaluation of raw_hcp_profiles.schema, oldest first."""
    import dagster as dg

    os.environ["DAGSTER_HOME"] = str(dagster_home)
    with dg.DagsterInstance.get() as instance:
        key = dg.AssetCheckKey(dg.AssetKey("raw_hcp_profiles"), "schema")
        records = instance.event_log_storage.get_asset_check_execution_history(key, limit=50)
        out = []
        for r in sorted(records, key=lambda r: r.id):
            event = r.event.dagster_event if r.event else None
            if event is not None and event.event_type_value == "ASSET_CHECK_EVALUATION":
                out.append((r.event.timestamp, event.event_specific_data.passed))
        return out


def bench_alerts() -> list[dict]:
    from run import clean_env

    from e2i_platform.lib.known_warnings import with_known_ignored

    receiver = Receiver()
    with tempfile.TemporaryDirectory(prefix="e2i-bench-alerts-") as tmp:
        home = Path(tmp)
        landing = _bad_landing(home)
        env = with_known_ignored(
            clean_env(
                E2I_HOME=str(home),
                E2I_PATIENTS="300",
                E2I_HCPS="40",
                E2I_ALERT_WEBHOOK_URL=receiver.url,
                E2I_ALERT_INTERVAL_SECONDS=str(INTERVAL_S),
            )
        )
        python = str(Path(sys.executable))
        subprocess.run(
            [python, "-m", "e2i_platform.ops.instance"], cwd=REPO, env=env, check=True,
            capture_output=True,
        )  # fmt: skip
        dagster_home = home / "dagster"
        env["DAGSTER_HOME"] = str(dagster_home)
        daemon = subprocess.Popen(
            [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", "workspace.yaml"],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            process_group=0,
        )
        try:
            time.sleep(INTERVAL_S + 10)  # the alert sensor's first tick: alerting started
            received = 0
            for attempt in range(FAILURES + 1):
                if attempt == FAILURES:
                    landing.unlink()  # the fix: the next run passes, one recovery
                subprocess.run(
                    [python, "-m", "e2i_platform.ops.run", "--select", "raw_hcp_profiles"],
                    cwd=REPO, env=env, capture_output=True, check=False,
                )  # fmt: skip
                # The first failure pages the gate and the run; later ones the gate and
                # the run again (new materializations); the fix recovers both.
                received += 2
                receiver.wait_for(received, WAIT_S)
            time.sleep(2 * INTERVAL_S)  # two more ticks: nothing new may arrive
        finally:
            os.killpg(daemon.pid, 15)
            daemon.wait(timeout=30)
        evaluations = _evaluation_times(dagster_home)
    gate_alerts = [(t, d) for t, d in receiver.received if d["kind"] == "gate"]
    failing = [t for t, d in gate_alerts if d["state"] == "firing"]
    recovered = [t for t, d in gate_alerts if d["state"] == "recovered"]
    failed_at = [t for t, passed in evaluations if not passed]
    passed_at = [t for t, passed in evaluations if passed]
    latencies = [a - e for a, e in zip(failing, failed_at, strict=True)]
    recovery = [a - e for a, e in zip(recovered, passed_at, strict=True)]
    worst = max(latencies + recovery)
    duplicates = len(failing) - len(failed_at)
    kinds: dict[str, int] = {}
    for _, d in receiver.received:
        kinds[f"{d['kind']} {d['state']}"] = kinds.get(f"{d['kind']} {d['state']}", 0) + 1
    return [
        {
            "benchmark": f"gate failing -> alert received (daemon, interval {INTERVAL_S} s, "
            f"{len(latencies)} failures)",
            "value": ", ".join(f"{s:.1f} s" for s in latencies),
            "ratio": f"worst {worst / INTERVAL_S:.2f} intervals",
            "target": f"<= 1 interval + tick ({'met' if worst <= INTERVAL_S + 5 else 'NOT met'})",
        },
        {
            "benchmark": "gate passing again -> recovery received",
            "value": ", ".join(f"{s:.1f} s" for s in recovery),
            "ratio": f"{len(recovered)} recovery message(s)",
            "target": f"exactly 1 ({'met' if len(recovered) == 1 else 'NOT met'})",
        },
        {
            "benchmark": "duplicate alerts (same materialization) over the daemon's ticks",
            "value": str(duplicates),
            "ratio": f"{len(receiver.received)} documents: "
            + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())),
            "target": f"0 ({'met' if duplicates == 0 else 'NOT met'})",
        },
    ]


def main() -> int:
    from run import print_table

    print_table(bench_alerts())
    return 0


if __name__ == "__main__":
    sys.exit(main())
