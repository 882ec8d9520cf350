"""The fleet's own overhead, measured with the NOOP device (`make bench`):

- throughput: 2,000 no-op jobs, submit -> all DONE in the store, against a bare Celery
  worker draining 2,000 no-op tasks on the same Redis, same pool (prefork, 2 processes),
  same broker settings, side by side in the same run (target: >= 0.6x);
- latency: on an idle fleet, one job's submit -> RUNNING (its start time on the worker;
  target p50 <= 50 ms).

Both under each dispatch policy (`strict`, before fair share; `fair`, the default), each
on a fresh store and fleet, its bare-Celery baseline measured in the same rounds.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from datetime import datetime

import httpx
import psycopg
import redis

from atomfleet.examples import plain
from bench.common import (
    Account,
    Services,
    account,
    fleet,
    machine,
    services,
    stop,
    summary,
    wait_healthy,
)
from bench.raw_celery import done_key, make_app
from core.config import Settings

CONCURRENCY = 2


def raw_celery(redis_url: str, tasks: int) -> float:
    """Seconds for a bare Celery worker to drain `tasks` no-op tasks (enqueue included)."""
    namespace = f"raw-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "ATOMFLEET_REDIS_URL": redis_url, "ATOMFLEET_NAMESPACE": namespace}
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "bench.raw_celery", "worker", "-Q", "raw",
         "-P", "prefork", "-c", str(CONCURRENCY), "--without-gossip", "--without-mingle",
         "--without-heartbeat", "--loglevel", "WARNING"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        settings = Settings(redis_url=redis_url, namespace=namespace)
        app = make_app(settings)
        client = redis.Redis.from_url(redis_url)
        time.sleep(3)  # the worker starts (not timed)
        payload = {"sequence": plain(3), "runs": 7}
        start = time.perf_counter()
        with app.producer_or_acquire() as producer, producer.batch():
            for i in range(tasks):
                app.send_task("raw.noop", args=[payload], queue="raw",
                              task_id=f"t{i}", producer=producer)  # fmt: skip
        while int(client.get(done_key(settings)) or 0) < tasks:
            if worker.poll() is not None:
                raise SystemExit("the bare Celery worker exited")
            time.sleep(0.005)
        return time.perf_counter() - start
    finally:
        worker.terminate()
        worker.wait(timeout=30)


def noop_batch(user: Account, jobs: int, sleep_s: float = 0.0) -> bytes:
    body = {
        "project_id": user.project_id,
        "device_type": "NOOP",
        "sequence_builder": plain(3),
        "jobs": [{"runs": 7}] * jobs,
    }
    if sleep_s:
        body["configuration"] = {"noop_sleep_s": sleep_s}
    return gzip.compress(json.dumps(body).encode())


HEADERS = {"Content-Type": "application/json", "Content-Encoding": "gzip"}


def atomfleet_throughput(client: httpx.Client, db: psycopg.Connection, user: Account,
                         jobs: int) -> float:  # fmt: skip
    """Seconds from submitting `jobs` NOOP jobs to all of them DONE in the store."""
    data = noop_batch(user, jobs)
    start = time.perf_counter()
    response = client.post("/api/v1/batches", content=data, headers={**HEADERS, **user.headers})
    assert response.status_code == 200, response.text[:300]
    batch_id = response.json()["data"]["id"]
    while True:
        row = db.execute("SELECT count_done FROM batches WHERE id = %s", (batch_id,)).fetchone()
        if row and row[0] == jobs:
            return time.perf_counter() - start
        time.sleep(0.005)


def submit_to_running(client: httpx.Client, db: psycopg.Connection, user: Account) -> float:
    """Seconds from submitting one NOOP job to its start on a worker."""
    data = noop_batch(user, 1)
    submitted = datetime.now().astimezone()
    response = client.post("/api/v1/batches", content=data, headers={**HEADERS, **user.headers})
    job_id = response.json()["data"]["jobs"][0]["id"]
    while True:
        row = db.execute(
            "SELECT start_timestamp FROM jobs WHERE id = %s AND start_timestamp IS NOT NULL",
            (job_id,),
        ).fetchone()
        if row:
            return float((row[0] - submitted).total_seconds())
        time.sleep(0.002)


POLICIES = ("strict", "fair")


def measure(
    svc: Services, policy: str, args: argparse.Namespace
) -> tuple[float, float, list[float]]:
    """One fleet under `policy` on a fresh store: (bare Celery s, atomfleet s, latencies)."""
    url = svc.new_database()
    user = account(url)
    procs, base = fleet(url, svc.redis_url, ATOMFLEET_DEVICES='["NOOP"]',
                        ATOMFLEET_POLICY=policy)  # fmt: skip
    procs.start("api")
    procs.start("scheduler")
    procs.start("worker-NOOP", "worker", "--device", "NOOP", "--concurrency",
                str(CONCURRENCY), "--loglevel", "WARNING")  # fmt: skip
    libpq = url.replace("postgresql+psycopg://", "postgresql://")
    try:
        with (
            httpx.Client(base_url=base, timeout=120) as client,
            psycopg.connect(libpq, autocommit=True) as db,
        ):
            wait_healthy(client)
            atomfleet_throughput(client, db, user, 50)  # warm up
            raw, ours = [], []
            for _ in range(args.rounds):
                raw.append(raw_celery(svc.redis_url, args.jobs))
                ours.append(atomfleet_throughput(client, db, user, args.jobs))
            time.sleep(2)  # idle again
            latencies = []
            for _ in range(args.latency_samples):
                latencies.append(submit_to_running(client, db, user))
                time.sleep(0.2)
            return statistics.median(raw), statistics.median(ours), latencies
    finally:
        stop(procs, svc.redis_url)
        svc.drop(url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-samples", type=int, default=30)
    parser.add_argument("--policy", choices=POLICIES, action="append",
                        help="dispatch policies to measure (default: both)")  # fmt: skip
    args = parser.parse_args()
    print(f"machine: {machine()}")
    with services() as svc:
        found = {policy: measure(svc, policy, args) for policy in args.policy or POLICIES}
    print(f"no-op throughput, {args.jobs} jobs, prefork x{CONCURRENCY}, median of "
          f"{args.rounds}, each policy beside bare Celery in its own rounds:")  # fmt: skip
    for policy, (raw_s, our_s, _) in found.items():
        raw_rate, our_rate = args.jobs / raw_s, args.jobs / our_s
        print(f"  policy {policy:6s}: bare Celery {raw_rate:5.0f} jobs/s ({raw_s:.2f} s), "
              f"atomfleet {our_rate:5.0f} jobs/s ({our_s:.2f} s) = "
              f"{our_rate / raw_rate:.2f}x (target >= 0.6x)")  # fmt: skip
    print(f"idle fleet, submit -> RUNNING ({args.latency_samples} jobs, target p50 <= 50 ms):")
    for policy, (_, _, latencies) in found.items():
        print(f"  policy {policy:6s}: {summary(latencies)}")


if __name__ == "__main__":
    main()
