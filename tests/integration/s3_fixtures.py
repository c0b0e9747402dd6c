"""A real S3-compatible store (moto's server, `tests/s3_server.py`) and a lock database
for tests of the warehouse on an object store. A test module loads them with

    pytest_plugins = ["s3_fixtures"]
"""

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from s3_server import CREDENTIALS, moto_server, new_bucket, s3_client


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """One moto server per test module (each test gets its own bucket)."""
    with moto_server() as endpoint:
        yield endpoint


@dataclass
class ObjectStore:
    endpoint: str
    bucket: str
    url: str  # s3://<bucket>/prefix: what `platform.store.url` would say
    lock_db_url: str

    def client(self):
        return s3_client(self.endpoint)

    def get(self, key: str) -> bytes:
        return self.client().get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def object_keys(self) -> list[str]:
        listed = self.client().list_objects_v2(Bucket=self.bucket)
        return sorted(o["Key"] for o in listed.get("Contents", []))


@pytest.fixture
def object_store(
    s3_endpoint: str, postgres_database: str, monkeypatch: pytest.MonkeyPatch
) -> ObjectStore:
    """A fresh bucket on the moto server and a fresh PostgreSQL database for the locks,
    named to the code the way a deployment names them: through the environment."""
    bucket = new_bucket(s3_endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("E2I_LOCK_DB_URL", postgres_database)
    # fsspec keeps one S3FileSystem per constructor arguments for the process, holding the
    # endpoint it was made with: a module after another (another moto server) needs its own.
    from s3fs import S3FileSystem

    S3FileSystem.clear_instance_cache()
    return ObjectStore(s3_endpoint, bucket, f"s3://{bucket}/prefix", postgres_database)
