"""What a scrape of the scheduler's `/metrics` costs on a large store (target: < 100 ms).

A real PostgreSQL store of 1,000,000 jobs (loaded in SQL with `INSERT ... SELECT
generate_series`: most of them ended, ~120k waiting in the backlog, a few hundred
dispatched and waiting in Redis, some running), its `job_counts` recomputed and
`VACUUM ANALYZE`d; a real `atomfleet scheduler --metrics-port` on it, with live workers
in Redis; then ~30 scrapes over HTTP, timed from request to last byte: p50 and p95 beside
the target. With `--explain`, the plans of the scrape's statements.

    .venv/bin/python bench/bench_metrics.py [--jobs 1000000] [--scrapes 30] [--explain]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import httpx
import psycopg
import redis
from sqlalchemy.dialects import postgresql

# This checkout's code, whichever checkout the virtualenv was installed from.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from atomfleet.services import free_port
from bench.common import fleet, machine, p, services, summary
from core.enums import DeviceType
from core.names import RedisKeys
from scheduler.db import make_engine, make_sessionmaker
from scheduler.fleet_state import (
    events_backlog,
    oldest_waiting_query,
    read_fleet,
    read_store,
)

TARGET_MS = 100.0
JOBS_PER_BATCH = 1000
PROJECTS = 100
DEVICES = [DeviceType.EMU_MPS, DeviceType.EMU_SV, DeviceType.EMU_FREE, DeviceType.EMU_TN]


def load(url: str, jobs: int) -> None:
    """`jobs` jobs in `jobs / 1000` batches of 100 projects, then the maintained counts."""
    batches = max(1, jobs // JOBS_PER_BATCH)
    ended = int(batches * 0.8)  # batches 1..ended: every job ended
    running = int(batches * 0.95)  # ..running: started, half their jobs waiting
    devices = "ARRAY[" + ",".join(f"'{d.value}'" for d in DEVICES) + "]"
    statements = [
        f"""INSERT INTO users (id, name, created_at)
            SELECT md5('u' || g)::uuid::text, 'bench-' || g, now()
            FROM generate_series(1, {PROJECTS}) g""",
        f"""INSERT INTO projects (id, name, created_at)
            SELECT md5('p' || g)::uuid::text, 'bench-' || g, now()
            FROM generate_series(1, {PROJECTS}) g""",
        f"""INSERT INTO batches (id, project_id, user_id, status, open, device_type,
                queue_priority, tags, created_at, updated_at, last_job_at, jobs_count,
                count_pending, count_running, count_done, count_error, count_canceled)
            SELECT md5('b' || b)::uuid::text, md5('p' || (b % {PROJECTS} + 1))::uuid::text,
                md5('u' || (b % {PROJECTS} + 1))::uuid::text,
                CASE WHEN b <= {ended} THEN 'DONE' WHEN b <= {running} THEN 'RUNNING'
                     ELSE 'PENDING' END,
                false, ({devices})[b % {len(DEVICES)} + 1],
                (ARRAY['HIGH', 'MEDIUM', 'LOW'])[b % 3 + 1], '[]',
                now() - make_interval(secs => {jobs} - (b - 1) * {JOBS_PER_BATCH}),
                now(), now() - make_interval(secs => {jobs} - b * {JOBS_PER_BATCH}),
                {JOBS_PER_BATCH}, 0, 0, 0, 0, 0
            FROM generate_series(1, {batches}) b""",
        f"""INSERT INTO jobs (id, batch_id, project_id, user_id, creation_order, status, runs,
                progress, created_at, updated_at, start_timestamp, end_timestamp, device_type,
                priority_rank, dispatched_at, attempt)
            SELECT gen_random_uuid()::text, md5('b' || b)::uuid::text,
                md5('p' || (b % {PROJECTS} + 1))::uuid::text,
                md5('u' || (b % {PROJECTS} + 1))::uuid::text, o, s, 100, 0, c, c,
                CASE WHEN s IN ('RUNNING', 'DONE', 'ERROR') THEN c END,
                CASE WHEN s IN ('DONE', 'ERROR', 'CANCELED') THEN c END,
                ({devices})[b % {len(DEVICES)} + 1], b % 3,
                CASE WHEN s = 'RUNNING' OR (s = 'PENDING' AND o < 12) THEN c END,
                CASE WHEN s = 'RUNNING' OR (s = 'PENDING' AND o < 12) THEN 1 ELSE 0 END
            FROM (
                SELECT b, o, now() - make_interval(secs => {jobs} - n) AS c,
                    CASE
                        WHEN b <= {ended} THEN CASE WHEN o % 97 = 0 THEN 'CANCELED'
                            WHEN o % 50 = 0 THEN 'ERROR' ELSE 'DONE' END
                        WHEN b <= {running} THEN CASE WHEN o < 10 THEN 'RUNNING'
                            WHEN o < 12 THEN 'PENDING' WHEN o < 500 THEN 'DONE'
                            ELSE 'PENDING' END
                        ELSE 'PENDING'
                    END AS s
                FROM (
                    SELECT n, (n - 1) / {JOBS_PER_BATCH} + 1 AS b, (n - 1) % {JOBS_PER_BATCH} AS o
                    FROM generate_series(1, {batches * JOBS_PER_BATCH}) n
                ) numbered
            ) planned""",
        """UPDATE batches SET count_pending = c.pending, count_running = c.running,
                count_done = c.done, count_error = c.error, count_canceled = c.canceled
            FROM (SELECT batch_id, count(*) FILTER (WHERE status = 'PENDING') AS pending,
                    count(*) FILTER (WHERE status = 'RUNNING') AS running,
                    count(*) FILTER (WHERE status = 'DONE') AS done,
                    count(*) FILTER (WHERE status = 'ERROR') AS error,
                    count(*) FILTER (WHERE status = 'CANCELED') AS canceled
                  FROM jobs GROUP BY batch_id) c
            WHERE batches.id = c.batch_id""",
        "DELETE FROM job_counts",
        """INSERT INTO job_counts (project_id, user_id, device_type, priority_rank, status, n)
            SELECT project_id, user_id, device_type, priority_rank, status, count(*)
            FROM jobs GROUP BY project_id, user_id, device_type, priority_rank, status""",
    ]
    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)  # type: ignore[arg-type]
        conn.execute("VACUUM ANALYZE")


def explain(url: str) -> None:
    """The plans of what a scrape asks the store (EXPLAIN ANALYZE)."""
    query = oldest_waiting_query(DEVICES).compile(
        dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}
    )
    statements = {
        "job counts": "SELECT device_type, priority_rank, status, sum(n) FROM job_counts "
        "GROUP BY device_type, priority_rank, status",
        "open batches": "SELECT count(*) FROM batches WHERE status IN ('PENDING', 'RUNNING')",
        "oldest waiting": str(query),
    }
    with psycopg.connect(url.replace("+psycopg", "")) as conn:
        for name, sql in statements.items():
            rows = conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql).fetchall()  # type: ignore[arg-type]
            plan = "\n".join(f"    {r[0]}" for r in rows)
            print(f"  {name}:\n{plan}")


def breakdown(
    url: str, client: redis.Redis, keys: RedisKeys, times: int
) -> tuple[list[float], list[float]]:
    """The scrape's reads, timed in this process: the store's, then Redis's."""
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    store_s, redis_s = [], []
    for _ in range(times):
        start = time.perf_counter()
        with sessions() as session:
            read_store(session, DEVICES)
        store_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        read_fleet(client, keys, DEVICES)
        events_backlog(client, keys)
        redis_s.append(time.perf_counter() - start)
    engine.dispose()
    return store_s, redis_s


def beat_workers(client: redis.Redis, keys: RedisKeys) -> None:
    """Ten live workers per device, two slots each, one busy (what heartbeats write)."""
    for device in DEVICES:
        for i in range(10):
            member = f"bench-{device.value}-{i}:1"
            client.zadd(keys.workers(device), {member: time.time()})
            info = json.dumps({"concurrency": 2, "busy": 1})
            client.hset(keys.worker_info(device), member, info)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--scrapes", type=int, default=30)
    parser.add_argument("--explain", action="store_true", help="print the statements' plans")
    args = parser.parse_args()
    print(f"bench_metrics on {machine()}")
    with services() as svc:
        url = svc.new_database()
        try:
            started = time.perf_counter()
            load(url, args.jobs)
            print(f"  store: {args.jobs:,} jobs loaded and analyzed in "
                  f"{time.perf_counter() - started:.0f} s")  # fmt: skip
            if args.explain:
                explain(url)
            run(url, svc.redis_url, args.scrapes)
        finally:
            svc.drop(url)


def run(url: str, redis_url: str, scrapes: int) -> None:
    """A scheduler on the store, scraped `scrapes` times over HTTP."""
    port = free_port()
    procs, _ = fleet(
        url,
        redis_url,
        ATOMFLEET_SCHEDULER_METRICS_PORT=str(port),
        ATOMFLEET_METRICS_HOST="127.0.0.1",
        # The store stays as loaded: nothing dispatched there is judged lost meanwhile.
        ATOMFLEET_LOST_GRACE_S="1000000",
    )
    namespace = procs.env["ATOMFLEET_NAMESPACE"]
    client = redis.Redis.from_url(redis_url)
    keys = RedisKeys(namespace)
    procs.start("scheduler")
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=30) as http:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if http.get("/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if procs.dead() or time.monotonic() > deadline:
                    raise SystemExit(f"the scheduler did not start; see {procs.log_dir}")
                time.sleep(0.2)
            beat_workers(client, keys)
            for _ in range(3):  # warm: connections, plans, imports
                http.get("/metrics")
            times = []
            size = 0
            for _ in range(scrapes):
                start = time.perf_counter()
                response = http.get("/metrics")
                times.append(time.perf_counter() - start)
                assert response.status_code == 200
                size = len(response.content)
                time.sleep(0.05)
            waiting = sum(
                float(line.rsplit(" ", 1)[1])
                for line in response.text.splitlines()
                if line.startswith("atomfleet_jobs_waiting{")
            )
        p95_ms = p(times, 0.95) * 1000
        verdict = "meets" if p95_ms < TARGET_MS else "MISSES"
        print(f"  scrape of the scheduler's /metrics ({scrapes} scrapes, {size:,} bytes, "
              f"{waiting:,.0f} jobs waiting): {summary(times)}")  # fmt: skip
        store_s, redis_s = breakdown(url, client, keys, scrapes)
        print(f"    of which the store's three statements: {summary(store_s)}")
        print(f"    and Redis (workers, slots, stalled, events): {summary(redis_s)}")
        print(f"  target: < {TARGET_MS:.0f} ms -> p95 {p95_ms:.1f} ms {verdict} it")
    finally:
        procs.stop()
        stale = list(client.scan_iter(match=f"{namespace}:*", count=1000))
        if stale:
            client.delete(*stale)


if __name__ == "__main__":
    main()
