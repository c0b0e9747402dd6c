"""`make dev`: the Dagster UI and daemon on the platform's instance, stopped on request.

Runs `dagster dev -w workspace.yaml` (webserver, daemon and code servers) in a process
group of its own, and on SIGTERM or SIGINT stops all of it within `STOP_SECONDS`:
first as Ctrl-C would (dagster dev's clean shutdown), then the whole group. Two traits
of `dagster dev` make this necessary: it maps SIGTERM to whatever SIGINT does, which
is *nothing* when it was started in the background (SIGINT ignored), and its clean
shutdown waits up to 60 s per child process.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

STOP_SECONDS = 8.0  # the promise is 10 s; the rest is for make and the OS
CLEAN_SHARE = 0.6  # of STOP_SECONDS for the clean shutdown, the rest for the group


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make dev", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", default="3000")
    args = parser.parse_args(argv)

    from e2i_platform.lib.known_warnings import with_known_ignored
    from e2i_platform.ops.instance import prepare_instance
    from e2i_platform.settings import load_settings

    home = prepare_instance(load_settings())
    dagster = str(Path(sys.executable).parent / "dagster")
    workspace = str(Path(__file__).resolve().parents[2] / "workspace.yaml")
    child = subprocess.Popen(
        [dagster, "dev", "-w", workspace, "-h", args.host, "-p", args.port],
        env=with_known_ignored({**os.environ, "DAGSTER_HOME": str(home)}),
        process_group=0,
        # Ctrl-C's default behaviour, whatever this process inherited: dagster dev maps
        # SIGTERM onto it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    print(f"E2I: Dagster UI on http://{args.host}:{args.port} (DAGSTER_HOME={home})", flush=True)

    # The handler only records the request: stopping from inside it would wait on the
    # child while the interrupted wait holds Popen's lock.
    requested: list[str] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: requested.append(signal.Signals(signum).name))
    while not requested and child.poll() is None:
        time.sleep(0.2)
    if not requested:
        return child.returncode
    stop_group(child, requested[0])
    return 0  # stopped as asked


def stop_group(child: subprocess.Popen, why: str, budget: float = STOP_SECONDS) -> int:
    """Stop `child` and its process group within `budget` seconds; its exit status
    (negative: the signal that ended it)."""
    print(f"E2I: {why} received, stopping the Dagster UI and daemon", flush=True)
    deadline = time.monotonic() + budget
    _signal_group(child.pid, signal.SIGINT)
    try:
        child.wait(timeout=budget * CLEAN_SHARE)
    except subprocess.TimeoutExpired:
        print("E2I: dagster dev is still shutting down; terminating its processes", flush=True)
    # The webserver, daemon and code servers share the group: none is left behind.
    _signal_group(child.pid, signal.SIGTERM)
    while time.monotonic() < deadline - 1.0:
        child.poll()  # reap dagster dev itself: a zombie still counts as a group member
        if not _group_alive(child.pid):
            break
        time.sleep(0.1)
    _signal_group(child.pid, signal.SIGKILL)
    return child.wait()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
