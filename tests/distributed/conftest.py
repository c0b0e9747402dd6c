"""The distributed lane: the whole graph on Celery workers that share nothing local
(tests/cluster.py). Real PostgreSQL and Redis (tests/lanes.py provides them), a moto S3
server and an MLflow server of the test's own."""

from database_fixtures import postgres_database, psycopg2_url  # noqa: F401
