"""What must agree between the machine that launches runs and the Celery workers that run
their steps, as a fingerprint: one short hash per part.

With `E2I_EXECUTOR=celery` each worker rebuilds the code location from its own checkout,
config/ files and environment. A worker started differently (another E2I_ENV, an edited
threshold, another store or tracking server, older code) would run steps under other
gates or write to other stores. The launching side records its fingerprint in the
Dagster instance (`record_reference`, from `ops.instance.prepare_instance`); `make
worker` and every step on a worker (`ConfigResource.setup_for_execution`) compare theirs
with it and name the parts that differ.

Only hashes are stored or shown: a URL loses its password (and secret-looking query
options) before it is hashed, so the same server with another password is the same
deployment, and no secret is ever hashed into the record.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from e2i_platform.lib.store import LOCK_DB_ENV, LOCK_DB_FALLBACK_ENV
from e2i_platform.lib.versions import GROUP_SECTIONS, NOT_COMPUTED, code_version

# The instance's key-value store (Dagster's daemon cursor table) holds one reference
# per Celery queue: the workers of a queue compare with what its launcher recorded.
KEY_PREFIX = "e2i/deployment/"
# resources.feast.REGISTRY_URL_VARIABLE (lib reads no resource module).
FEAST_REGISTRY_URL_VARIABLE = "E2I_FEAST_REGISTRY_URL"

CODE_AND_CONFIGURATION = "code and configuration"
PARTS = (
    CODE_AND_CONFIGURATION,
    "environment",
    "store",
    "Optuna storage",
    "MLflow tracking",
    "Feast registry",
    "online store",
    "lock database",
)

# Settings that may differ between machines of one deployment (home, executor caps,
# retries, schedules; see lib.versions) and those hashed as parts of their own (the
# stores). `training.run_mode` is not left out, unlike in code versions: a step on a
# worker reads it when the run does not set it, so it changes what that step does.
_SEPARATE = {
    "optuna": {"storage": True},
    "mlflow": {"tracking_uri": True},
    "platform": {"feature_store": {"online_store": True}},
}
_SECRET_OPTION = ("password", "passwd", "pwd", "secret", "token", "key")


def _merged(a: dict, b: dict) -> dict:
    out = dict(a)
    for key, value in b.items():
        out[key] = _merged(out[key], value) if isinstance(out.get(key), dict) else value
    return out


_EXCLUDED = {
    section: _merged(
        {
            k: v
            for k, v in NOT_COMPUTED.get(section, {}).items()
            if (section, k) != ("training", "run_mode")
        },
        _SEPARATE.get(section, {}),
    )
    for section in sorted({s for sections in GROUP_SECTIONS.values() for s in sections})
}


def without_secrets(url: str | None) -> str:
    """`url` without its password and secret-looking query options; the `+driver` of an
    SQLAlchemy scheme dropped (postgresql+psycopg2 and postgresql name one database)."""
    if not url:
        return ""
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0]
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        netloc = f"{user}@{hostport}" if user else hostport
    query = urlencode(
        [
            (k, v)
            for k, v in parse_qsl(parts.query, keep_blank_values=True)
            if not any(word in k.lower() for word in _SECRET_OPTION)
        ]
    )
    return urlunsplit((scheme, netloc, parts.path, query, parts.fragment))


def _hash(*values: str) -> str:
    digest = hashlib.sha256()
    for value in values:
        digest.update(value.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def deployment_fingerprint(settings) -> dict[str, str]:
    """Per part that must agree across machines, sha256 (16 hex) of what decides it.

    Cheap enough for every step: the code's hash is computed once per process
    (`code_version` is cached), the rest is a few small JSON dumps."""
    env = os.environ
    config = [code_version()]
    for section, exclude in _EXCLUDED.items():
        config += [section, getattr(settings, section).model_dump_json(exclude=exclude or None)]
    registry = settings.platform.feature_store.registry
    online = settings.online_store
    mlflow_uri = env.get("MLFLOW_TRACKING_URI") or settings.under_home(settings.mlflow.tracking_uri)
    return {
        CODE_AND_CONFIGURATION: _hash(*config),
        "environment": _hash(settings.env),
        # The bucket and the endpoint that serves it: one bucket name on two servers is
        # two stores.
        "store": _hash(
            settings.platform.store.url or "",
            without_secrets(env.get("AWS_ENDPOINT_URL")) if settings.platform.store.url else "",
        ),
        "Optuna storage": _hash(without_secrets(settings.under_home(settings.optuna.storage))),
        "MLflow tracking": _hash(
            str(settings.mlflow.enabled),
            without_secrets(mlflow_uri) if settings.mlflow.enabled else "",
        ),
        "Feast registry": _hash(
            registry,
            without_secrets(env.get(FEAST_REGISTRY_URL_VARIABLE)) if registry == "sql" else "",
        ),
        "online store": _hash(
            online, without_secrets(env.get("REDIS_URL")) if online == "redis" else ""
        ),
        "lock database": _hash(
            without_secrets(env.get(LOCK_DB_ENV) or env.get(LOCK_DB_FALLBACK_ENV))
        ),
    }


@dataclass(frozen=True)
class Reference:
    """The fingerprint a launcher recorded for a queue, when and on which host."""

    parts: dict[str, str]
    recorded_at: str
    host: str

    def differing(self, mine: dict[str, str]) -> list[str]:
        """The parts of `mine` that differ from this reference (a part either side does
        not know counts as differing: older or newer code)."""
        return [
            p for p in sorted({*mine, *self.parts}, key=_order) if mine.get(p) != self.parts.get(p)
        ]


def _order(part: str) -> tuple[int, str]:
    return (PARTS.index(part) if part in PARTS else len(PARTS), part)


def reference_key(queue: str) -> str:
    return f"{KEY_PREFIX}{queue}"


def record_reference(instance, settings) -> Reference:
    """Record `settings`' fingerprint as the reference of their Celery queue."""
    reference = Reference(
        parts=deployment_fingerprint(settings),
        recorded_at=datetime.now(UTC).isoformat(timespec="seconds"),
        host=socket.gethostname(),
    )
    value = json.dumps(
        {"parts": reference.parts, "recorded_at": reference.recorded_at, "host": reference.host},
        sort_keys=True,
    )
    queue = settings.platform.executor.celery_queue
    # The instance's key-value table (what the daemons keep their cursors in).
    instance.run_storage.set_cursor_values({reference_key(queue): value})
    return reference


def read_reference(instance, queue: str) -> Reference | None:
    """The reference recorded for `queue`, or None when no launcher recorded one."""
    key = reference_key(queue)
    raw = instance.run_storage.get_cursor_values({key}).get(key)
    if not raw:
        return None
    data = json.loads(raw)
    return Reference(parts=dict(data["parts"]), recorded_at=data["recorded_at"], host=data["host"])


def mismatch_message(differing: list[str], reference: Reference, who: str) -> str:
    """What differs (part names only, never values) and what to do about it."""
    return (
        f"{who} does not run with the configuration of the machine that launches runs: "
        f"{', '.join(differing)} differ{'s' if len(differing) == 1 else ''} from the reference "
        f"recorded by {reference.host} at {reference.recorded_at}. Start the worker with the "
        "launcher's configuration (the same checkout, config/ files, E2I_ENV and store "
        "variables: E2I_STORE_URL, DAGSTER_PG_URL, OPTUNA_STORAGE_URL, MLFLOW_TRACKING_URI, "
        "E2I_FEAST_REGISTRY(_URL), REDIS_URL, E2I_LOCK_DB_URL), or, if the launcher's "
        "configuration is the one to change, re-run make run or make dev there to record a "
        "new reference"
    )
