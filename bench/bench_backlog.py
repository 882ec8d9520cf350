"""A dispatch decision and a HIGH job's start with 10k, 100k and 1M LOW jobs waiting.

One PostgreSQL store, grown in place: empty, then 10,000, 100,000 and 1,000,000 LOW jobs
waiting in the backlog, written with SQL (`bench.dataset.load_backlog`). The waiting jobs
are EMU_SV jobs, a device this fleet does not serve (no worker, not dispatched), so the
backlog cannot drain while it is measured. At each size:

- dispatch decision: the policy's `pick` plus the UPDATE of the picked rows, as in
  `Dispatcher._dispatch`'s transaction (rolled back, so every round sees the same
  backlog), for EMU_SV itself: one HIGH EMU_SV job waits ahead of the LOW ones, so
  `limit=1` takes it and `limit=64` (the largest window) takes it and 63 LOW jobs
  (target: < 10 ms); under both policies, `strict` (levels then FIFO, the dispatcher
  before fair share) and `fair` (the default), the LOW backlog spread over 100 projects;
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

from atomfleet.examples import plain
from bench.common import Account, account, fleet, machine, p, services, stop, wait_healthy
from bench.dataset import load_backlog, refresh_counts
from core.config import Settings
from core.enums import DeviceType
from scheduler.db import make_engine, make_sessionmaker
from scheduler.models import Job, utcnow
from scheduler.policies import make_policy
from scheduler.policies.base import Policy

SIZES = (10_000, 100_000, 1_000_000)
PROJECTS = 100  # the LOW backlog is spread evenly over this many projects
WINDOW = 64  # Settings.dispatch_window_per_device: the most a decision ever takes
DECISION_TARGET_MS = 10.0
BLOCKS = 5
POLICIES = ("strict", "fair")  # before fair share, and the default
HEADERS = {"Content-Type": "application/json", "Content-Encoding": "gzip"}


def decision_times(
    sessions: sessionmaker[Session], policy: Policy, limit: int, rounds: int
) -> list[float]:
    """Seconds of `pick` + UPDATE for EMU_SV, each in its own transaction, rolled back."""
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
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES),
                        help="backlog sizes measured, in increasing order")  # fmt: skip
    args = parser.parse_args()
    print(f"machine: {machine()}")
    rows: list[tuple[str, dict[str, list[float]], dict[str, list[float]], list[float]]] = []
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
                owners = [user] + [account(url) for _ in range(PROJECTS - 1)]
                policies = {name: make_policy(Settings(policy=name)) for name in POLICIES}
                for _ in range(5):
                    high_to_running(client, db, user)  # warm up
                waiting = 0
                for size in (0, *args.sizes):
                    if size > waiting:
                        start = time.perf_counter()
                        for owner in owners:
                            load_backlog(db, owner, (size - waiting) // PROJECTS,
                                         device="EMU_SV")  # fmt: skip
                        refresh_counts(db)
                        waiting = size
                        print(f"  ({size:,d} LOW jobs waiting: written in "
                              f"{time.perf_counter() - start:.0f} s)", flush=True)  # fmt: skip
                    for policy in policies.values():
                        decision_times(sessions, policy, WINDOW, 10)  # warm up
                    one: dict[str, list[float]] = {name: [] for name in POLICIES}
                    window: dict[str, list[float]] = {name: [] for name in POLICIES}
                    latencies = []
                    # in blocks, interleaved: a burst of load on the shared machine
                    # spoils one block, not a whole figure
                    for _ in range(BLOCKS):
                        for name, policy in policies.items():
                            n = args.rounds // BLOCKS
                            one[name] += decision_times(sessions, policy, 1, n)
                            window[name] += decision_times(sessions, policy, WINDOW, n)
                        for _ in range(args.samples // BLOCKS):
                            latencies.append(high_to_running(client, db, user))
                            time.sleep(0.1)
                    label = f"{size:,d}" if size else "0 (empty)"
                    rows.append((label, one, window, latencies))
            engine.dispose()
        finally:
            if procs is not None:
                stop(procs, svc.redis_url)
            svc.drop(url)
    print(f"dispatch decision: pick + UPDATE, {args.rounds} rounds each, LOW backlog over "
          f"{PROJECTS} projects; HIGH NOOP job submit -> RUNNING on a real fleet (policy fair), "
          f"{args.samples} jobs each")  # fmt: skip
    print(f"{'LOW jobs waiting':>18s} | {'policy':6s} | {'decision, 1 job':>21s} | "
          f"{'decision, 64 jobs':>21s} | {'HIGH submit -> RUNNING':>34s}")  # fmt: skip
    empty = p(rows[0][3], 0.5)
    for label, one, window, latencies in rows:
        ratio = p(latencies, 0.5) / empty
        for name in POLICIES:
            high = (f"p50 {ms(latencies, 0.5)} p95 {ms(latencies, 0.95)} = {ratio:.2f}x"
                    if name == "fair" else "")  # fmt: skip
            print(f"{label:>18s} | {name:6s} | p50 {ms(one[name], 0.5)} p95 "
                  f"{ms(one[name], 0.95)} | p50 {ms(window[name], 0.5)} p95 "
                  f"{ms(window[name], 0.95)} | {high}")  # fmt: skip
    for name in POLICIES:
        worst = max(p(r[2][name], 0.5) for r in rows) * 1000
        verdict = "ok" if worst < DECISION_TARGET_MS else "MISS"
        print(f"policy {name}: decision < {DECISION_TARGET_MS:.0f} ms (worst p50 {worst:.1f} ms:"
              f" {verdict})")  # fmt: skip
    ratio = max(p(r[3], 0.5) for r in rows) / empty
    print(
        f"HIGH p50 within 2x of the empty store (worst {ratio:.2f}x: "
        f"{'ok' if ratio <= 2 else 'MISS'})"
    )


def ms(values: list[float], q: float) -> str:
    return f"{p(values, q) * 1000:5.1f} ms"


if __name__ == "__main__":
    main()
