"""A dispatch decision and a HIGH job's start with 10k, 100k and 1M LOW jobs waiting.

One PostgreSQL store, grown in place: empty, then 10,000, 100,000 and 1,000,000 LOW jobs
waiting in the backlog, written with SQL (`bench.dataset.load_backlog`). The waiting jobs
are EMU_SV jobs, a device this fleet does not serve (no worker, not dispatched), so the
backlog cannot drain while it is measured. At each size:

- dispatch decision: the policy's `pick` plus the UPDATE of the picked rows, as in
  `Dispatcher._dispatch`'s transaction (rolled back, so every round sees the same
  backlog), for EMU_SV itself: one HIGH EMU_SV job waits ahead of the LOW ones, so
  `limit=1` takes it and `limit=64` (the largest window) takes it and 63 LOW jobs
  (target: < 10 ms);
- HIGH submit -> RUNNING: a real fleet (api, scheduler, a NOOP worker) takes a new HIGH
  NOOP job; its start time on the worker minus the time it was posted (target: within
  2x of the empty store's figure, measured first in the same run).
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from datetime import datetime

import httpx
import psycopg
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from bench.common import Account, account, fleet, machine, p, services, stop, wait_healthy
from bench.dataset import load_backlog, refresh_counts
from core.enums import DeviceType
from scheduler.db import make_engine, make_sessionmaker
from scheduler.models import Job, utcnow
from scheduler.policies.strict import StrictPriority
from tests.sequences import plain

SIZES = (10_000, 100_000, 1_000_000)
WINDOW = 64  # Settings.dispatch_window_per_device: the most a decision ever takes
DECISION_TARGET_MS = 10.0
BLOCKS = 5
HEADERS = {"Content-Type": "application/json", "Content-Encoding": "gzip"}


def decision_times(sessions: sessionmaker[Session], limit: int, rounds: int) -> list[float]:
    """Seconds of `pick` + UPDATE for EMU_SV, each in its own transaction, rolled back."""
    policy = StrictPriority()
    times = []
    for _ in range(rounds):
        with sessions() as session:
            start = time.perf_counter()
            now = utcnow()
            rows = policy.pick(session, DeviceType.EMU_SV, limit, now)
            session.execute(
                update(Job)
                .where(Job.id.in_([r.id for r in rows]))
                .values(attempt=Job.attempt + 1, dispatched_at=now)
            )
            times.append(time.perf_counter() - start)
            assert rows[0].priority_rank == 0
            session.rollback()
    return times


def high_to_running(client: httpx.Client, db: psycopg.Connection, user: Account) -> float:
    """Seconds from posting one HIGH NOOP job to its start on the worker."""
    body = {
        "project_id": user.project_id,
        "device_type": "NOOP",
        "queue_priority": "HIGH",
        "sequence_builder": plain(3),
        "jobs": [{"runs": 7}],
    }
    data = gzip.compress(json.dumps(body).encode())
    submitted = datetime.now().astimezone()
    response = client.post("/api/v1/batches", content=data, headers={**HEADERS, **user.headers})
    assert response.status_code == 200, response.text[:300]
    job_id = response.json()["data"]["jobs"][0]["id"]
    while True:
        row = db.execute(
            "SELECT start_timestamp FROM jobs WHERE id = %s AND start_timestamp IS NOT NULL",
            (job_id,),
        ).fetchone()
        if row:
            return float((row[0] - submitted).total_seconds())
        time.sleep(0.002)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=200, help="decisions per size and limit")
    parser.add_argument("--samples", type=int, default=30, help="HIGH jobs per size")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    rows: list[tuple[str, list[float], list[float], list[float]]] = []
    with services() as svc:
        url = svc.new_database()
        procs = None
        try:
            user = account(url)
            libpq = url.replace("postgresql+psycopg://", "postgresql://")
            engine = make_engine(url)
            sessions = make_sessionmaker(engine)
            procs, base = fleet(url, svc.redis_url, ATOMFLEET_DEVICES='["NOOP"]')
            procs.start("api")
            procs.start("scheduler")
            procs.start("worker-NOOP", "worker", "--device", "NOOP", "--concurrency", "2",
                        "--loglevel", "WARNING")  # fmt: skip
            with (
                httpx.Client(base_url=base, timeout=120) as client,
                psycopg.connect(libpq, autocommit=True) as db,
            ):
                wait_healthy(client)
                load_backlog(db, user, 1, device="EMU_SV", priority="HIGH")
                refresh_counts(db)
                for _ in range(5):
                    high_to_running(client, db, user)  # warm up
                waiting = 0
                for size in (0, *SIZES):
                    if size > waiting:
                        start = time.perf_counter()
                        load_backlog(db, user, size - waiting, device="EMU_SV")
                        refresh_counts(db)
                        waiting = size
                        print(f"  ({size:,d} LOW jobs waiting: written in "
                              f"{time.perf_counter() - start:.0f} s)", flush=True)  # fmt: skip
                    decision_times(sessions, WINDOW, 10)  # warm up
                    one: list[float] = []
                    window: list[float] = []
                    latencies = []
                    # in blocks, interleaved: a burst of load on the shared machine
                    # spoils one block, not a whole figure
                    for _ in range(BLOCKS):
                        one += decision_times(sessions, 1, args.rounds // BLOCKS)
                        window += decision_times(sessions, WINDOW, args.rounds // BLOCKS)
                        for _ in range(args.samples // BLOCKS):
                            latencies.append(high_to_running(client, db, user))
                            time.sleep(0.1)
                    rows.append((f"{size:,d}" if size else "0 (empty)", one, window, latencies))
            engine.dispose()
        finally:
            if procs is not None:
                stop(procs, svc.redis_url)
            svc.drop(url)
    print(f"dispatch decision: pick + UPDATE, {args.rounds} rounds each; HIGH NOOP job submit"
          f" -> RUNNING on a real fleet, {args.samples} jobs each")  # fmt: skip
    print(f"{'LOW jobs waiting':>18s} | {'decision, 1 job':>21s} | {'decision, 64 jobs':>21s}"
          f" | {'HIGH submit -> RUNNING':>34s}")  # fmt: skip
    empty = p(rows[0][3], 0.5)
    for label, one, window, latencies in rows:
        ratio = p(latencies, 0.5) / empty
        print(f"{label:>18s} | p50 {ms(one, 0.5)} p95 {ms(one, 0.95)} |"
              f" p50 {ms(window, 0.5)} p95 {ms(window, 0.95)} |"
              f" p50 {ms(latencies, 0.5)} p95 {ms(latencies, 0.95)} = {ratio:.2f}x")  # fmt: skip
    worst = max(p(r[2], 0.5) for r in rows) * 1000
    ratio = max(p(r[3], 0.5) for r in rows) / empty
    print(f"targets: decision < {DECISION_TARGET_MS:.0f} ms (worst p50 {worst:.1f} ms: "
          f"{'ok' if worst < DECISION_TARGET_MS else 'MISS'}); HIGH p50 within 2x of the empty"
          f" store (worst {ratio:.2f}x: {'ok' if ratio <= 2 else 'MISS'})")  # fmt: skip


def ms(values: list[float], q: float) -> str:
    return f"{p(values, q) * 1000:5.1f} ms"


if __name__ == "__main__":
    main()
