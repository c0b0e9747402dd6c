"""A real S3-compatible object store for tests: moto's server in its own process.

``moto_server()`` starts ``python -m moto.server`` on a free port, waits until it
answers and yields its endpoint URL; the process (and its group) is stopped on exit.
Everything it stores lives in that process's memory: nothing reaches the disk and
nothing outlives the context. ``new_bucket(endpoint)`` creates a bucket of a unique
name. moto accepts any credentials; tests use ``testing``/``testing``.

Manual use: ``python tests/s3_server.py`` prints an endpoint and serves until Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

from services import free_port

START_TIMEOUT_S = 30.0
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
REGION = "us-east-1"


class MotoUnavailable(RuntimeError):
    """The moto server did not start or did not answer."""


def _answers(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint}/moto-api/reset-auth", timeout=1):
            pass
    except urllib.error.HTTPError:
        return True  # an HTTP answer of any status: the server is up
    except OSError:
        return False
    return True


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)  # its own group: werkzeug's children go too
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """Yield the endpoint (``http://127.0.0.1:<port>``) of a private moto server."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="e2i-moto-") as workdir:
        log_path = Path(workdir) / "moto.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=workdir,
                start_new_session=True,  # a group of its own, stopped as one
            )
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while not _answers(endpoint):
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = log_path.read_text(errors="replace")[-2000:]
                    raise MotoUnavailable(f"moto server on port {port} did not answer:\n{tail}")
                time.sleep(0.1)
            yield endpoint
        finally:
            _stop(proc)


def s3_client(endpoint: str):
    """A boto3 S3 client on the moto server (the test credentials, not the environment's)."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )


def new_bucket(endpoint: str, prefix: str = "e2i-test") -> str:
    """Create a bucket of a unique name on the server; return its name."""
    name = f"{prefix}-{uuid.uuid4().hex[:12]}"
    s3_client(endpoint).create_bucket(Bucket=name)
    return name


if __name__ == "__main__":
    with moto_server() as url:
        print(url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
