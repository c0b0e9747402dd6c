"""The Dagster instance the platform runs on: DAGSTER_HOME under E2I_HOME.

`make run` and `make dev` share it, so runs started from either appear in the UI, and
`make run` keeps DAGSTER_HOME in the repository's `.env` for the default home: the
Dagster CLIs (`dagster asset materialize ...`) read `.env` from the directory they
run in, so they find the same instance with no variable to export.
The instance config is rendered from config/dagster/dagster.<storage>.yaml (with
`${DAGSTER_HOME}` replaced by the directory's path); the
prod one reads its PostgreSQL URL from the environment at run time, so no secret
is ever written to disk.

With `E2I_EXECUTOR=celery`, preparing the instance also records the launching side's
deployment fingerprint there (lib.deployment), the reference `make worker` and every step
on a worker compare theirs with. What launches runs prepares it (`make run` and `make
rollback` through `use_instance`, `make dev`, `make releases REPAIR=...`), so the
reference is the configuration of the last of them started; `make report` only renders
the instance (`render_instance`) and records nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from e2i_platform.settings import Settings
from e2i_platform.settings.loader import REPO_ROOT

TEMPLATES = {"sqlite": "dagster.local.yaml", "postgres": "dagster.prod.yaml"}
HOME_PLACEHOLDER = "${DAGSTER_HOME}"  # in a template: this DAGSTER_HOME's absolute path


def dagster_home(settings: Settings) -> Path:
    return settings.home / "dagster"


def prepare_instance(settings: Settings, home: Path | None = None) -> Path:
    """Create DAGSTER_HOME with its dagster.yaml for the configured storage; return it.
    With the Celery executor, record this machine's deployment fingerprint in the
    instance as the reference of its queue (the workers compare theirs with it)."""
    home = render_instance(settings, home)
    if settings.platform.executor.kind == "celery":
        from e2i_platform.lib.deployment import record_reference

        with open_instance(home) as instance:
            record_reference(instance, settings)
    return home


@contextmanager
def open_instance(home: Path) -> Iterator:
    """The instance of a rendered DAGSTER_HOME, closed after the block."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        yield instance


@contextmanager
def open_launchers_instance(settings: Settings) -> Iterator:
    """The instance runs are launched on, as this machine reaches it, leaving no file on
    its disk (a worker keeps nothing there): PostgreSQL storage rendered into a temporary
    directory; SQLite storage only where its home already exists (the launcher's own
    machine), else None."""
    import tempfile

    if settings.platform.instance.storage == "postgres":
        with (
            tempfile.TemporaryDirectory(prefix="e2i-instance-") as scratch,
            open_instance(render_instance(settings, Path(scratch))) as instance,
        ):
            yield instance
        return
    home = dagster_home(settings)
    if not (home / "dagster.yaml").exists():
        yield None
        return
    with open_instance(home) as instance:
        yield instance


def render_instance(settings: Settings, home: Path | None = None) -> Path:
    """Create DAGSTER_HOME with its dagster.yaml for the configured storage (nothing
    recorded in it); return it."""
    home = home or dagster_home(settings)
    home.mkdir(parents=True, exist_ok=True)
    storage = settings.platform.instance.storage
    if storage == "postgres" and not os.environ.get("DAGSTER_PG_URL"):
        raise RuntimeError(
            "instance.storage is postgres (E2I_ENV=prod) but DAGSTER_PG_URL is not set; "
            "export DAGSTER_PG_URL=postgresql+psycopg2://USER:PASSWORD@HOST:5432/DB"
        )
    template = (settings.config_dir / "dagster" / TEMPLATES[storage]).read_text()
    # Rendered at every start, so a home copied elsewhere names its own directory.
    # The placeholder sits in a double-quoted YAML string: escaped as JSON escapes it (a
    # subset of YAML's), a path with '#', ': ' or quotes stays one value.
    rendered = template.replace(HOME_PLACEHOLDER, json.dumps(str(home.resolve()))[1:-1])
    rendered += shared_compute_logs(settings.platform.store.url)
    target = home / "dagster.yaml"
    if not target.exists() or target.read_text() != rendered:
        target.write_text(rendered)
    return home


def shared_compute_logs(store_url: str | None) -> str:
    """With a shared object store, the instance's `compute_logs` section: a step's stdout
    and stderr go there (dagster-aws), so the UI shows them whichever machine ran the
    step, and no worker keeps them. The endpoint is named by variable, never written."""
    if not store_url:
        return ""
    parts = urlsplit(store_url)
    if parts.scheme != "s3" or not parts.netloc:
        raise RuntimeError(
            f"store.url {store_url!r} (E2I_STORE_URL): the shared store must be an "
            "s3://bucket/prefix URL (any S3-compatible service)"
        )
    prefix = "/".join(p for p in (*parts.path.split("/"), "dagster", "compute_logs") if p)
    endpoint = (
        "    endpoint_url: {env: AWS_ENDPOINT_URL}\n" if os.environ.get("AWS_ENDPOINT_URL") else ""
    )
    return (
        "# Step logs in the shared store (E2I_STORE_URL): readable whichever machine ran the step.\n"
        "compute_logs:\n"
        "  module: dagster_aws.s3.compute_log_manager\n"
        "  class: S3ComputeLogManager\n"
        "  config:\n"
        f"    bucket: {json.dumps(parts.netloc)}\n"
        f"    prefix: {json.dumps(prefix)}\n"
        f"{endpoint}"
    )


def use_instance(settings: Settings) -> Path:
    """Prepare DAGSTER_HOME and make it this process's instance (what
    `dg.DagsterInstance.get()` and the processes it starts open): `make run`, `make
    rollback` and `make releases REPAIR=...` launch their runs on the one instance."""
    home = prepare_instance(settings)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def write_dotenv(settings: Settings, home: Path, dotenv: Path = REPO_ROOT / ".env") -> bool:
    """Set DAGSTER_HOME in `dotenv` when `settings` use the default home (another home is
    a deliberate choice, e.g. a test's, and must not redirect the developer's CLIs);
    other lines of the file are kept. Whether the file was written."""
    if settings.home.resolve() != (REPO_ROOT / ".e2i").resolve():
        return False
    lines = dotenv.read_text().splitlines() if dotenv.exists() else []
    kept = [ln for ln in lines if not ln.strip().startswith("DAGSTER_HOME=")]
    if not kept:
        kept = ["# Maintained by make run: the Dagster CLIs run here use the platform's instance."]
    text = "\n".join([*kept, f"DAGSTER_HOME={home.resolve()}"]) + "\n"
    if not dotenv.exists() or dotenv.read_text() != text:
        dotenv.write_text(text)
    return True


if __name__ == "__main__":  # prepare DAGSTER_HOME and print it (bench/alerts.py)
    from e2i_platform.settings import load_settings

    print(prepare_instance(load_settings()))
