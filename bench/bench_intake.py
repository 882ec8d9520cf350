"""Times accepting a 10,000-job parametrized batch over HTTP (`make bench`).

A real `atomfleet api` process on PostgreSQL (the test server, or a throwaway cluster) and
on SQLite; the client posts the gzip body as the SDK does and times the POST until the
201-style answer with every job. Prints the median and the spread of several rounds.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psycopg
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from atomfleet.examples import parametrized_sweep  # noqa: E402
from atomfleet.services import ensure_postgres, ensure_redis  # noqa: E402
from bench.common import fleet as common_fleet  # noqa: E402
from bench.common import wait_healthy  # noqa: E402
from scheduler import accounts  # noqa: E402
from scheduler.db import make_engine, make_sessionmaker  # noqa: E402
from scheduler.migrate import upgrade  # noqa: E402


def body(project_id: str, jobs: int) -> bytes:
    variables = [
        {"omega": 2.0 + 8.0 * (i % 100) / 100, "duration": 200 + 8 * (i // 100)}
        for i in range(jobs)
    ]
    payload = {
        "project_id": project_id,
        "device_type": "EMU_SV",
        "sequence_builder": parametrized_sweep(4),
        "jobs": [{"runs": 100, "variables": v} for v in variables],
    }
    return gzip.compress(json.dumps(payload).encode())


def bench(database_url: str, redis_url: str, jobs: int, rounds: int) -> list[float]:
    engine = make_engine(database_url)
    upgrade(engine)
    with make_sessionmaker(engine).begin() as session:
        user = accounts.create_user(session, f"bench-{uuid.uuid4().hex[:6]}")
        project = accounts.create_project(session, "bench")
        accounts.add_member(session, user.id, project.id)
        token = accounts.create_token(session, user.id).token
    engine.dispose()
    fleet, base = common_fleet(database_url, redis_url)
    fleet.start("api")
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
        "Content-Encoding": "gzip",
        "User-Agent": "PasqalCloudSDK/0.24.0",
    }
    data = body(project.id, jobs)
    times = []
    try:
        with httpx.Client(base_url=base, timeout=120) as client:
            wait_healthy(client)
            client.post("/api/v1/batches", content=body(project.id, 10), headers=headers)  # warm
            for _ in range(rounds):
                start = time.perf_counter()
                response = client.post("/api/v1/batches", content=data, headers=headers)
                times.append(time.perf_counter() - start)
                assert response.status_code == 200, response.text[:500]
                assert len(response.json()["data"]["jobs"]) == jobs
    finally:
        fleet.stop()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    services = Path(tempfile.gettempdir()) / "atomfleet-bench-services"
    redis_service = ensure_redis(
        os.environ.get("ATOMFLEET_REDIS_URL", "redis://127.0.0.1:6379/0"), services
    )
    pg = ensure_postgres(
        os.environ.get(
            "ATOMFLEET_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        ),
        services,
    )
    server = make_url(pg.url)
    name = f"atomfleet_bench_{uuid.uuid4().hex[:6]}"
    admin = server.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    targets = {
        "postgresql": server.set(database=name).render_as_string(hide_password=False),
        "sqlite": f"sqlite:///{tempfile.mkdtemp(prefix='atomfleet-bench-')}/bench.db",
    }
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"accepting a {args.jobs}-job parametrized batch over HTTP (gzip), {args.rounds} rounds")
    try:
        for label, url in targets.items():
            times = bench(url, redis_service.url, args.jobs, args.rounds)
            print(
                f"  {label:<10} median {statistics.median(times):.3f} s  "
                f"min {min(times):.3f} s  max {max(times):.3f} s  "
                f"({args.jobs / statistics.median(times):,.0f} jobs/s)"
            )
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        pg.stop()
        redis_service.stop()


if __name__ == "__main__":
    main()
