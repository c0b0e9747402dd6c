"""A real MLflow tracking server for tests: PostgreSQL behind it, artifacts proxied.

``mlflow_server(backend_uri, artifacts_dir, workdir)`` starts ``mlflow server`` as the
several-machines setup runs it (``--backend-store-uri postgresql+psycopg2://...
--serve-artifacts --artifacts-destination <dir>``) on a free port, waits for
``GET /health``, yields ``http://127.0.0.1:<port>`` and stops the whole process group
on exit. Clients then write nothing of MLflow's to their own disk: runs go to the
database, artifacts to ``artifacts_dir`` through the server (``mlflow-artifacts:/``).

Kept light: one uvicorn worker (uvicorn, MLflow 3.17's default server, runs it in the
process it starts, with no supervisor) and no job runner (huey consumers that only
GenAI jobs use). The server's HOME is ``workdir``, so whatever it writes there (a
telemetry id when telemetry is on) stays in the test's directory.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from services import free_port

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
LOG_TAIL_LINES = 30


class MlflowServerError(RuntimeError):
    """The server did not answer /health in time (or exited)."""


def _health(url: str) -> str | None:
    """None when the server answers /health with 200, else why not."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return None if response.status == 200 else f"HTTP {response.status}"
    except (urllib.error.URLError, OSError) as err:
        return str(getattr(err, "reason", err))


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's process group, SIGKILL if it lingers; reaps the leader."""
    for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, STOP_TIMEOUT_S)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:  # the whole group is gone
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            proc.poll()
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
    proc.wait(timeout=STOP_TIMEOUT_S)


@contextmanager
def mlflow_server(backend_uri: str, artifacts_dir: Path, workdir: Path) -> Iterator[str]:
    """Run `mlflow server` on `backend_uri` (a SQLAlchemy URL, e.g.
    `postgresql+psycopg2://...`), proxying artifacts to `artifacts_dir`, with cwd, HOME
    and its log (`mlflow-server.log`) in `workdir`; yields its URL."""
    artifacts_dir, workdir = Path(artifacts_dir), Path(workdir)
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        backend_uri,
        "--serve-artifacts",
        "--artifacts-destination",
        str(artifacts_dir.absolute()),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    env = {
        **os.environ,
        "HOME": str(workdir.absolute()),
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    # A client-side tracking URI in the environment means nothing to the server.
    env.pop("MLFLOW_TRACKING_URI", None)
    log_path = workdir / "mlflow-server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            command,
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Its own process group: the CLI, uvicorn and its worker stop together.
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        problem = _health(url)
        while problem is not None:
            if proc.poll() is not None:
                raise MlflowServerError(
                    f"mlflow server exited with {proc.returncode} before answering "
                    f"{url}/health; log tail:\n{_tail(log_path)}"
                )
            if time.monotonic() > deadline:
                raise MlflowServerError(
                    f"mlflow server at {url} did not answer /health within "
                    f"{START_TIMEOUT_S:.0f} s ({problem}); log tail:\n{_tail(log_path)}"
                )
            time.sleep(0.2)
            problem = _health(url)
        yield url
    finally:
        _stop_group(proc)
