"""The Feast feature store as a resource.

It loads the committed `feature_repo/feature_store*.yaml` (written for the default
home, so the plain Feast CLI works there) and sets what this resource decides: the
project, the registry and SQLite paths under its home, and for Redis the connection
string derived from REDIS_URL. `cli_config` writes the same configuration for the
Feast CLI (`make feast`), the Redis connection left as `${E2I_FEAST_REDIS}` for
Feast to read from the environment, so no secret is written. Feast is imported lazily.

The offline data are the warehouse's published Parquet tables: `<home>/warehouse`, or
with `store_url` (`platform.store.url`, e.g. `s3://bucket/prefix`) the object store's
`<store_url>/warehouse` every machine reads (`offline_dir`); Feast's sources name those
files, and DuckDB reads an object store through fsspec (`features.offline`). Its endpoint
and credentials stay in the environment (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY); nothing here writes them anywhere.

The registry is a file under the home (`registry: file`) or Feast's SQL registry in
the database of E2I_FEAST_REGISTRY_URL (`registry: sql`), which every machine running
a step shares; Feast keys its rows by project, so projects in one database stay
apart. Like the Redis connection, the URL (it may carry a password) stays in the
environment: the configuration Feast is given on disk says `${E2I_FEAST_REGISTRY_URL}`
and metadata names only the host, port and database.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

import dagster as dg

if TYPE_CHECKING:
    from upath import UPath

REPO_PATH = Path(__file__).resolve().parents[2] / "feature_repo"


def feast_redis_connection(url: str) -> str:
    """`redis://[:password@]host:port/db` -> Feast's `host:port,db=N[,password=...]`."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ValueError("REDIS_URL must look like redis://[:password@]host:port/db")
    conn = f"{parts.hostname}:{parts.port or 6379}"
    db = parts.path.lstrip("/") or "0"
    conn += f",db={db}"
    if parts.password:
        conn += f",password={unquote(parts.password)}"
    if parts.scheme == "rediss":
        conn += ",ssl=true"
    return conn


REGISTRY_URL_VARIABLE = "E2I_FEAST_REGISTRY_URL"
REGISTRY_KINDS = ("file", "sql")


def feast_registry_url(url: str) -> str:
    """An SQLAlchemy URL for Feast's SQL registry. A bare `postgresql://` (or
    `postgres://`) gets the psycopg2 driver: Feast would rewrite it to psycopg 3, which
    is not installed."""
    for bare in ("postgresql://", "postgres://"):
        if url.startswith(bare):
            return "postgresql+psycopg2://" + url[len(bare) :]
    return url


def describe_url(url: str) -> str:
    """`scheme://host:port/database` of a database URL: no user, password or query."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"


class FeastResource(dg.ConfigurableResource):
    """Where the Feast repository, registry and online store are."""

    home: str
    project: str
    online_store: str  # "sqlite" or "redis"
    redis_url: str | None = None  # from the REDIS_URL environment variable (dg.EnvVar)
    registry: str = "file"  # "file": <home>/feast/registry.db; "sql": Feast's SQL registry
    # For "sql": from the E2I_FEAST_REGISTRY_URL environment variable (dg.EnvVar), e.g.
    # postgresql+psycopg2://user:password@host:5432/db; never written anywhere.
    registry_url: str | None = None
    repo_path: str = str(REPO_PATH)
    # s3://bucket/prefix (settings: platform.store.url): the offline tables are the
    # published warehouse there, not under `home`.
    store_url: str | None = None

    @classmethod
    def for_settings(cls, settings) -> FeastResource:
        """The resource outside a run (the Feast CLI's wrappers): REDIS_URL and
        E2I_FEAST_REGISTRY_URL read now."""
        import os

        return cls(
            home=str(settings.home),
            project=settings.platform.feature_store.project,
            online_store=settings.online_store,
            redis_url=os.environ.get("REDIS_URL"),
            registry=settings.platform.feature_store.registry,
            registry_url=os.environ.get(REGISTRY_URL_VARIABLE),
            store_url=settings.platform.store.url,
        )

    @staticmethod
    def registry_fields(settings) -> dict:
        """The registry fields for the definitions: the kind from the settings and, for
        sql, the URL as a `dg.EnvVar` (resolved when a run builds the resource; the UI
        and the run's configuration show only the variable's name)."""
        kind = settings.platform.feature_store.registry
        url = dg.EnvVar(REGISTRY_URL_VARIABLE) if kind == "sql" else None
        return {"registry": kind, "registry_url": url}

    @property
    def offline_dir(self) -> Path | UPath:
        """The published warehouse Feast's sources read: `<home>/warehouse`, or
        `<store_url>/warehouse` in the object store (a `UPath`)."""
        from e2i_platform.lib.store import store_root

        return store_root(self.home, self.store_url) / "warehouse"

    @property
    def remote_offline(self) -> bool:
        """Whether the offline tables are in an object store."""
        return bool(self.store_url)

    @property
    def spill_dir(self) -> Path:
        """Where DuckDB spills a join that outgrows its memory limit: scratch, never
        durable state. Under the home on a local store; with an object store, where a
        worker may keep nothing under its home, this machine's temporary directory
        (DuckDB names its spill files per process and removes its own)."""
        if self.remote_offline:
            import os
            import tempfile

            return Path(tempfile.gettempdir()) / f"e2i-duckdb-spill-{os.getuid()}"
        return Path(self.home) / "feast" / "duckdb_spill"

    @property
    def yaml_file(self) -> Path:
        name = "feature_store.redis.yaml" if self.online_store == "redis" else "feature_store.yaml"
        return Path(self.repo_path) / name

    def redis_connection(self) -> str:
        if not self.redis_url:
            raise dg.Failure(
                "feature store: the Redis online store is selected but REDIS_URL is not set"
            )
        return feast_redis_connection(self.redis_url)

    @property
    def sql_registry(self) -> bool:
        if self.registry not in REGISTRY_KINDS:
            raise dg.Failure(
                f"feature store: registry {self.registry!r} is not one of {REGISTRY_KINDS}"
            )
        return self.registry == "sql"

    def registry_connection(self) -> str:
        """The SQL registry's SQLAlchemy URL (a secret: never log or record it)."""
        if not self.registry_url:
            raise dg.Failure(
                "feature store: the SQL registry is selected (E2I_FEAST_REGISTRY=sql) but "
                f"{REGISTRY_URL_VARIABLE} is not set (e.g. "
                "postgresql+psycopg2://user:password@host:5432/database)"
            )
        return feast_registry_url(self.registry_url)

    def config_values(self) -> dict:
        """The committed YAML with this resource's project, registry and online store
        location; a Redis connection string stays `${E2I_FEAST_REDIS}` and the SQL
        registry's URL `${E2I_FEAST_REGISTRY_URL}`."""
        import yaml

        values = yaml.safe_load(self.yaml_file.read_text())
        values["project"] = self.project
        if self.sql_registry:
            self.registry_connection()  # a clear failure when the URL is missing
            values["registry"] = {
                "registry_type": "sql",
                "path": f"${{{REGISTRY_URL_VARIABLE}}}",
                # Each step is a fresh process; a long-lived reader (a monitor, a server)
                # sees another machine's apply within this, or at once after
                # refresh_registry().
                "cache_ttl_seconds": values["registry"].get("cache_ttl_seconds", 60),
                # A pooled connection the server closed (restart, idle timeout) is
                # replaced instead of failing the first query.
                "sqlalchemy_config_kwargs": {"echo": False, "pool_pre_ping": True},
            }
        else:
            values["registry"]["path"] = self._repo_relative("registry.db")
        if values["online_store"]["type"] == "sqlite":
            values["online_store"]["path"] = self._repo_relative("online_store.db")
        return values

    def _repo_relative(self, name: str) -> str:
        """A file under <home>/feast/ as Feast's CLI names it: relative to the repository,
        which Feast joins unnormalized. The registry records the online tables by that
        path, so on the default home the platform and a plain `feast plan` in
        feature_repo/ (`../.e2i/feast/...`) must name them alike, or every table shows as
        a change."""
        import os

        return os.path.relpath(Path(self.home).resolve() / "feast" / name, self.repo_path)

    def repo_config(self):
        from feast.repo_config import RepoConfig

        values = self.config_values()
        if values["online_store"]["type"] == "redis":
            values["online_store"]["connection_string"] = self.redis_connection()
        if values["registry"]["registry_type"] == "sql":
            values["registry"]["path"] = self.registry_connection()
        config = RepoConfig(**values)
        config.repo_path = Path(self.repo_path)
        return config

    def cli_config(self) -> tuple[Path, dict[str, str]]:
        """A feature_store.yaml for the Feast CLI on this home (under <home>/feast/) and
        the environment it needs: E2I_HOME for the repository's sources, for Redis
        E2I_FEAST_REDIS, and for the SQL registry E2I_FEAST_REGISTRY_URL (with the
        driver Feast needs). Feast substitutes both in the file it reads
        (`os.path.expandvars`); the file holds neither."""
        import yaml

        path = Path(self.home) / "feast" / "feature_store.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        header = (
            f"# Written by `make feast` from {self.yaml_file.name}; not read by the platform.\n"
        )
        path.write_text(header + yaml.safe_dump(self.config_values(), sort_keys=False))
        env = {"E2I_HOME": str(self.home)}
        if self.online_store == "redis":
            env["E2I_FEAST_REDIS"] = self.redis_connection()
        if self.sql_registry:
            env[REGISTRY_URL_VARIABLE] = self.registry_connection()
        return path, env

    def store(self):
        """A FeatureStore on this resource's configuration. It carries the home as
        `e2i_home` and the offline directory as `e2i_offline_dir`: with the SQL registry
        nothing in Feast's configuration names them, and `features.registry_paths` needs
        them. `<home>/feast/` is created only for what lives there (the registry file, the
        SQLite online store): with the SQL registry, Redis and an object store, nothing is
        written under the home."""
        from feast import FeatureStore

        if not self.sql_registry or self.online_store != "redis":
            Path(self.home, "feast").mkdir(parents=True, exist_ok=True)
        store = FeatureStore(repo_path=self.repo_path, config=self.repo_config())
        store.e2i_home = Path(self.home).resolve()
        store.e2i_offline_dir = (
            self.offline_dir if self.remote_offline else store.e2i_home / "warehouse"
        )
        return store

    def has_registry(self) -> bool:
        """Whether there is a registry to read: the file exists, or (SQL) always -- Feast
        creates its tables on first use and an unapplied project lists nothing."""
        if self.sql_registry:
            return True
        return (Path(self.home) / "feast" / "registry.db").exists()

    def registry_problem(self) -> str | None:
        """Why the applied registry is not there (for `make run`'s reuse check), or None:
        the file is missing, or the SQL registry holds no feature view of this project."""
        if not self.sql_registry:
            registry = Path(self.home) / "feast" / "registry.db"
            return None if registry.exists() else f"the Feast registry {registry} is missing"
        store = self.store()
        if not store.list_feature_views():
            where = describe_url(self.registry_connection())
            return f"the Feast SQL registry {where} holds no feature view of project {self.project}"
        return None

    def redis_client(self):
        """A redis-py client on the online store, or None for SQLite."""
        if self.online_store != "redis":
            return None
        import redis

        self.redis_connection()  # a clear failure when REDIS_URL is missing
        return redis.Redis.from_url(self.redis_url)

    def ping_online_store(self) -> None:
        """Raise unless the Redis online store answers now (SQLite: nothing to reach).

        One ping with a short timeout and no retry of its own: a check judges the store as
        it is, and a step's retries are the step's (lib.transient). A connection error is
        raised as redis-py's (transient); refused credentials are a `dg.Failure` naming the
        store (asking again will not help). Feast's own client, left to redis-py's
        defaults, retries each read with back-off up to 10 s: four views took ~45 s to come
        out unknown against a stopped Redis."""
        if self.online_store != "redis":
            return
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.redis_connection()  # a clear failure when REDIS_URL is missing
        client = redis.Redis.from_url(
            self.redis_url, socket_connect_timeout=2, socket_timeout=2, retry=Retry(NoBackoff(), 0)
        )
        try:
            client.ping()
        except (redis.AuthenticationError, redis.exceptions.AuthorizationError) as exc:
            raise dg.Failure(
                f"feature store: the Redis online store at {self.describe()['redis']} refused "
                f"the credentials in REDIS_URL: {type(exc).__name__}: {exc}"
            ) from None
        finally:
            client.close()

    def online_store_unreachable(self) -> str | None:
        """Why the online store cannot be reached now (``"ConnectionError: ..."``), or None
        when it answers (`ping_online_store`)."""
        import redis

        try:
            self.ping_online_store()
        except redis.RedisError as exc:
            return f"{type(exc).__name__}: {exc}"
        except dg.Failure as exc:
            return exc.description
        return None

    def describe(self) -> dict[str, str]:
        """Where things are, without secrets (for metadata)."""
        where = {
            "project": self.project,
            "online_store": self.online_store,
            "registry": str(Path(self.home) / "feast" / "registry.db"),
            "offline": str(self.offline_dir),
        }
        if self.registry == "sql":
            where["registry"] = (
                f"sql {describe_url(feast_registry_url(self.registry_url))}"
                if self.registry_url
                else f"sql ({REGISTRY_URL_VARIABLE} not set)"
            )
        if self.online_store == "redis" and self.redis_url:
            parts = urlsplit(self.redis_url)
            where["redis"] = f"{parts.hostname}:{parts.port or 6379}/{parts.path.lstrip('/') or 0}"
        else:
            where["sqlite"] = str(Path(self.home) / "feast" / "online_store.db")
        return where
