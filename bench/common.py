"""What every benchmark shares: the services, a throwaway database, an account, a fleet."""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import redis
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from atomfleet.accounts import Account, bootstrap  # noqa: E402
from atomfleet.launcher import Fleet  # noqa: E402
from atomfleet.services import Started, ensure_postgres, ensure_redis, free_port  # noqa: E402
from scheduler.db import make_engine, make_sessionmaker  # noqa: E402
from scheduler.migrate import upgrade  # noqa: E402

SERVICES = Path(tempfile.gettempdir()) / "atomfleet-bench-services"


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


@dataclass
class Services:
    redis_url: str
    pg: Started
    admin_url: str

    def new_database(self) -> str:
        """A fresh, migrated PostgreSQL database (dropped by `cleanup`)."""
        name = f"atomfleet_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = make_url(self.pg.url).set(database=name).render_as_string(hide_password=False)
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        return url

    def drop(self, url: str) -> None:
        name = make_url(url).database
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def services() -> Iterator[Services]:
    redis_service = ensure_redis(
        os.environ.get("ATOMFLEET_REDIS_URL", "redis://127.0.0.1:6379/0"), SERVICES
    )
    pg = ensure_postgres(
        os.environ.get(
            "ATOMFLEET_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        ),
        SERVICES,
    )
    admin = make_url(pg.url).set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        yield Services(redis_service.url, pg, admin)
    finally:
        pg.stop()
        redis_service.stop()


def account(database_url: str) -> Account:
    engine = make_engine(database_url)
    with make_sessionmaker(engine).begin() as session:
        found = bootstrap(session, f"bench-{uuid.uuid4().hex[:6]}", "bench")
    engine.dispose()
    return found


def fleet(database_url: str, redis_url: str, **env: str) -> tuple[Fleet, str]:
    """A Fleet of child processes sharing a fresh namespace; returns it and the API's URL."""
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="atomfleet-bench-"))
    full_env = {
        **os.environ,
        "ATOMFLEET_DATABASE_URL": database_url,
        "ATOMFLEET_REDIS_URL": redis_url,
        "ATOMFLEET_NAMESPACE": f"bench-{uuid.uuid4().hex[:6]}",
        "ATOMFLEET_API_PORT": str(port),
        "ATOMFLEET_DATA_DIR": str(workdir),
        "ATOMFLEET_SECRET_KEY": "bench",
        "ATOMFLEET_SCHEDULER_METRICS_PORT": "0",
        "ATOMFLEET_WORKER_METRICS_PORT": "0",
        **env,
    }
    return Fleet(full_env, workdir), f"http://127.0.0.1:{port}"


def stop(procs: Fleet, redis_url: str) -> None:
    """Stop the fleet's processes and delete the Redis keys of its namespace."""
    procs.stop()
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{procs.env['ATOMFLEET_NAMESPACE']}:*", count=1000))
    if keys:
        client.delete(*keys)


def wait_healthy(client: httpx.Client, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if client.get("/readyz").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("the API did not start")
        time.sleep(0.2)


def p(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of `values`."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(values: list[float], unit: str = "ms", scale: float = 1000.0) -> str:
    return (
        f"p50 {statistics.median(values) * scale:.1f} {unit}  "
        f"p95 {p(values, 0.95) * scale:.1f} {unit}  max {max(values) * scale:.1f} {unit}"
    )


def rss_mb(pid: int) -> float:
    """The resident set size of process `pid` (VmRSS), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise LookupError(f"no VmRSS for process {pid}")
