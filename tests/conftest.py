"""Real services for every test: PostgreSQL and Redis, found or started (never skipped).

- PostgreSQL: `ATOMFLEET_TEST_DATABASE_URL` (default the local server's `test` database),
  else a throwaway cluster. Each session gets its own fresh database, migrated once;
  store tests start from empty tables.
- Redis: `ATOMFLEET_TEST_REDIS_URL` (default the local server), else a local
  redis-server. Each test gets its own key namespace, deleted afterwards.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from atomfleet.accounts import Account, bootstrap
from atomfleet.services import ensure_postgres, ensure_redis
from core.config import Settings
from scheduler.db import make_engine, make_sessionmaker
from scheduler.migrate import upgrade
from tests.slurm_cluster import SlurmCluster

SERVICES_DIR = Path(tempfile.gettempdir()) / "atomfleet-test-services"
TABLES = (
    "results, jobs, job_counts, project_usage, webhook_deliveries, batch_tags, batches, "
    "api_tokens, memberships, projects, users"
)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = os.environ.get("ATOMFLEET_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    started = ensure_redis(url, SERVICES_DIR)
    yield started.url
    started.stop()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A new, migrated PostgreSQL database for this test session."""
    url = os.environ.get(
        "ATOMFLEET_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    )
    started = ensure_postgres(url, SERVICES_DIR)
    server = make_url(started.url)
    name = f"atomfleet_test_{uuid.uuid4().hex[:8]}"
    admin = server.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    session_url = server.set(database=name).render_as_string(hide_password=False)
    engine = make_engine(session_url)
    upgrade(engine)
    engine.dispose()
    yield session_url
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    started.stop()


@pytest.fixture(scope="session")
def pg_engine(pg_url: str) -> Iterator[Engine]:
    engine = make_engine(pg_url)
    yield engine
    engine.dispose()


@pytest.fixture
def namespace(redis_url: str) -> Iterator[str]:
    ns = f"test-{uuid.uuid4().hex[:10]}"
    yield ns
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{ns}:*", count=1000))
    if keys:
        client.delete(*keys)


@pytest.fixture
def settings(pg_url: str, redis_url: str, namespace: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=pg_url,
        redis_url=redis_url,
        namespace=namespace,
        data_dir=tmp_path,
        secret_key="test-secret",
    )


@pytest.fixture
def sessions(pg_engine: Engine) -> sessionmaker[Session]:
    """Sessions on the session database, emptied before the test."""
    with pg_engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {TABLES} CASCADE"))
    return make_sessionmaker(pg_engine)


@pytest.fixture
def redis_client(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


def make_account(sessions: sessionmaker[Session], name: str | None = None) -> Account:
    with sessions.begin() as session:
        return bootstrap(session, name or f"user-{uuid.uuid4().hex[:8]}", "project")


@pytest.fixture
def account(sessions: sessionmaker[Session]) -> Account:
    return make_account(sessions)


@pytest.fixture(scope="session")
def slurm() -> Iterator[SlurmCluster]:
    """A real single-node SLURM cluster of its own (tests/slurm_cluster.py), stopped by PID.
    Shared by the session's tests: their job names are unique; a test that stops its
    controller starts it again.

    Under /tmp with a short name: munge's socket path must stay under 108 bytes."""
    root = Path(tempfile.mkdtemp(prefix="af-slurm-", dir="/tmp"))
    cluster = SlurmCluster(root).start()
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
