"""The Feast feature store as a resource.

It loads the committed `feature_repo/feature_store*.yaml` with the same variables
the Feast CLI reads (E2I_HOME, E2I_FEAST_PROJECT, E2I_FEAST_REDIS), substituted
from this resource's fields instead of the process environment, so the platform
and `feast -c feature_repo plan` see one configuration. Feast is imported lazily.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

import dagster as dg

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


class FeastResource(dg.ConfigurableResource):
    """Where the Feast repository, registry and online store are."""

    home: str
    project: str
    online_store: str  # "sqlite" or "redis"
    redis_url: str | None = None  # from the REDIS_URL environment variable (dg.EnvVar)
    repo_path: str = str(REPO_PATH)

    @property
    def offline_dir(self) -> Path:
        return Path(self.home) / "warehouse"

    @property
    def spill_dir(self) -> Path:
        """Where DuckDB spills a join that outgrows its memory limit."""
        return Path(self.home) / "feast" / "duckdb_spill"

    @property
    def yaml_file(self) -> Path:
        name = "feature_store.redis.yaml" if self.online_store == "redis" else "feature_store.yaml"
        return Path(self.repo_path) / name

    def variables(self) -> dict[str, str]:
        values = {"E2I_HOME": self.home, "E2I_FEAST_PROJECT": self.project}
        if self.online_store == "redis":
            if not self.redis_url:
                raise dg.Failure(
                    "feature store: the Redis online store is selected but REDIS_URL is not set"
                )
            values["E2I_FEAST_REDIS"] = feast_redis_connection(self.redis_url)
        return values

    def repo_config(self):
        import yaml
        from feast.repo_config import RepoConfig

        values = self.variables()

        def value(match: re.Match) -> str:
            try:
                return values[match.group(1)]
            except KeyError:
                raise dg.Failure(
                    f"{self.yaml_file}: unknown variable ${{{match.group(1)}}}"
                ) from None

        text = re.sub(r"\$\{(\w+)\}", value, self.yaml_file.read_text())
        config = RepoConfig(**yaml.safe_load(text))
        config.repo_path = Path(self.repo_path)
        return config

    def store(self):
        from feast import FeatureStore

        Path(self.home, "feast").mkdir(parents=True, exist_ok=True)
        return FeatureStore(repo_path=self.repo_path, config=self.repo_config())

    def redis_client(self):
        """A redis-py client on the online store, or None for SQLite."""
        if self.online_store != "redis":
            return None
        import redis

        self.variables()  # a clear failure when REDIS_URL is missing
        return redis.Redis.from_url(self.redis_url)

    def describe(self) -> dict[str, str]:
        """Where things are, without secrets (for metadata)."""
        where = {
            "project": self.project,
            "online_store": self.online_store,
            "registry": str(Path(self.home) / "feast" / "registry.db"),
        }
        if self.online_store == "redis" and self.redis_url:
            parts = urlsplit(self.redis_url)
            where["redis"] = f"{parts.hostname}:{parts.port or 6379}/{parts.path.lstrip('/') or 0}"
        else:
            where["sqlite"] = str(Path(self.home) / "feast" / "online_store.db")
        return where
