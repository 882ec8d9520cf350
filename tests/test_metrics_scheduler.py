"""The scheduler's metrics: gauges read at scrape time equal the store and Redis; counters
and histograms follow the committed status changes; the loops' clock is its health."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import redis
from prometheus_client import generate_latest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from core.enums import BatchStatus, DeviceType, EventKind, JobStatus, QueuePriority
from core.metrics import new_registry
from core.names import RedisKeys
from scheduler import operations
from scheduler.collector import FleetCollector
from scheduler.db import make_engine, make_sessionmaker
from scheduler.loop_clock import LoopClock
from scheduler.metrics import SchedulerMetrics
from scheduler.models import Batch, Job, utcnow
from scheduler.reconcile import Reconciler
from tests.conftest import Account
from tests.metrics_support import Scrape, beat, report, submit

MPS, SV = DeviceType.EMU_MPS, DeviceType.EMU_SV


def scrape(registry: object) -> Scrape:
    return Scrape(generate_latest(registry).decode())  # type: ignore[arg-type]


def test_the_gauges_equal_the_store_and_redis(
    settings: Settings,
    sessions: sessionmaker[Session],
    account: Account,
    redis_client: redis.Redis,
) -> None:
    # Given jobs at every level and in every status, on two devices
    high = submit(sessions, account, MPS, "HIGH", 3)
    low = submit(sessions, account, MPS, "LOW", 2)
    sv = submit(sessions, account, SV, "MEDIUM", 4)
    report(sessions, high[0], EventKind.RUNNING, started_at=time.time())
    report(sessions, sv[0], EventKind.DONE)
    report(sessions, sv[1], EventKind.ERROR, errors=["boom"])
    with sessions.begin() as session:
        operations.cancel_job(session, account.user_id, low[0])
        # the oldest waiting job was dispatched: it waits in Redis, off the backlog index
        session.execute(
            update(Job)
            .where(Job.id == high[2])
            .values(dispatched_at=utcnow(), created_at=utcnow() - timedelta(hours=1))
        )
    # And two live workers of EMU_MPS (3 slots, 1 busy), a gone one of EMU_SV, which is
    # STALLED, and 3 worker events not applied yet
    keys = RedisKeys(settings.namespace)
    beat(redis_client, keys, MPS, "a:1", concurrency=2, busy=1)
    beat(redis_client, keys, MPS, "b:1", concurrency=1, busy=0)
    beat(redis_client, keys, SV, "c:1", concurrency=4, busy=0, ago=120)
    redis_client.hset(keys.device_state(SV), "stalled_since", time.time())
    for i in range(3):
        redis_client.xadd(keys.events_stream, {"n": i})
    clock = LoopClock({"dispatch": 1.0})
    registry = new_registry()
    registry.register(
        FleetCollector(sessions, redis_client, keys, [MPS, SV, DeviceType.EMU_FREE], clock)
    )
    # When Prometheus scrapes
    metrics = scrape(registry)
    # Then every job gauge is what the jobs table holds
    with sessions() as session:
        rows = session.execute(
            select(Job.device_type, Job.priority_rank, Job.status, func.count()).group_by(
                Job.device_type, Job.priority_rank, Job.status
            )
        ).all()
        truth = {(d, r, s): n for d, r, s, n in rows}
        open_batches = session.scalar(
            select(func.count())
            .select_from(Batch)
            .where(Batch.status.in_([BatchStatus.PENDING, BatchStatus.RUNNING]))
        )
        oldest = session.scalar(
            select(func.min(Job.created_at)).where(
                Job.device_type == MPS, Job.status == JobStatus.PENDING
            )
        )
    for device in (MPS, SV, DeviceType.EMU_FREE):
        d = device.value
        for p in QueuePriority:
            expected = truth.get((device, p.rank, JobStatus.PENDING), 0)
            assert metrics.value("atomfleet_jobs_waiting", device_type=d, priority=p.value) == (
                expected
            ), (d, p)
        for status in JobStatus:
            expected = sum(truth.get((device, r, status), 0) for r in range(3))
            assert metrics.value("atomfleet_jobs", device_type=d, status=status.value) == (
                expected
            ), (d, status)
        running = sum(truth.get((device, r, JobStatus.RUNNING), 0) for r in range(3))
        assert metrics.value("atomfleet_jobs_running", device_type=d) == running
    assert metrics.value("atomfleet_jobs_waiting", device_type="EMU_MPS", priority="HIGH") == 2
    assert metrics.value("atomfleet_jobs", device_type="EMU_SV", status="ERROR") == 1
    assert metrics.value("atomfleet_batches_open") == open_batches == 3
    assert oldest is not None
    age = metrics.value("atomfleet_oldest_waiting_job_age_seconds", device_type="EMU_MPS")
    assert abs(age - (datetime.now(UTC) - oldest).total_seconds()) < 5 and age > 3500
    assert 0 < metrics.value("atomfleet_oldest_waiting_job_age_seconds", device_type="EMU_SV") < 60
    assert metrics.value("atomfleet_oldest_waiting_job_age_seconds", device_type="EMU_FREE") == 0
    # And the fleet gauges are what Redis holds
    assert metrics.value("atomfleet_workers", device_type="EMU_MPS") == 2
    assert metrics.value("atomfleet_workers", device_type="EMU_SV") == 0
    assert metrics.value("atomfleet_worker_slots", device_type="EMU_MPS", status="busy") == 1
    assert metrics.value("atomfleet_worker_slots", device_type="EMU_MPS", status="idle") == 2
    assert metrics.value("atomfleet_device_stalled", device_type="EMU_SV") == 1
    assert metrics.value("atomfleet_device_stalled", device_type="EMU_MPS") == 0
    assert metrics.value("atomfleet_events_backlog") == 3
    assert abs(metrics.value("atomfleet_scheduler_last_loop_timestamp_seconds") - time.time()) < 60
    assert "atomfleet_qpu_up" in metrics.names()
    assert not metrics.label_values("atomfleet_qpu_up", "device_type"), "no QPU is served"


def test_a_scrape_without_the_database_still_serves_what_redis_says(
    settings: Settings, redis_client: redis.Redis
) -> None:
    # Given a store that does not answer, and a live worker
    dead = make_sessionmaker(make_engine("postgresql+psycopg://postgres@127.0.0.1:1/x"))
    keys = RedisKeys(settings.namespace)
    beat(redis_client, keys, MPS, "a:1", concurrency=1, busy=0)
    registry = new_registry()
    registry.register(FleetCollector(dead, redis_client, keys, [MPS], LoopClock({"a": 1.0})))
    # When Prometheus scrapes, the store's gauges are left out, the rest is served
    metrics = scrape(registry)
    assert metrics.value("atomfleet_workers", device_type="EMU_MPS") == 1
    assert not metrics.label_values("atomfleet_jobs_waiting", "device_type")


def test_counters_and_histograms_follow_the_committed_moves(
    settings: Settings,
    sessions: sessionmaker[Session],
    account: Account,
    redis_client: redis.Redis,
) -> None:
    # Given the scheduler's metrics reacting to its sessions
    metrics = SchedulerMetrics(new_registry(), [SV])
    reacting = make_sessionmaker(sessions.kw["bind"], reactors=[metrics.reactor()])
    jobs = submit(sessions, account, SV, "MEDIUM", 4)
    # When one job runs then ends, one ends before it said RUNNING, one fails without ever
    # starting, and one is lost by its worker and requeued
    start = time.time() - 2.0
    report(reacting, jobs[0], EventKind.RUNNING, started_at=start)
    report(reacting, jobs[0], EventKind.DONE, started_at=start)
    report(reacting, jobs[1], EventKind.DONE, started_at=start)
    report(reacting, jobs[2], EventKind.ERROR, errors=["cannot build"])
    report(reacting, jobs[3], EventKind.RUNNING, started_at=start)
    with reacting.begin() as session:
        session.execute(update(Job).where(Job.id == jobs[3]).values(dispatched_at=utcnow()))
    Reconciler(settings, reacting, redis_client, [SV])._requeue([jobs[3]], utcnow())
    report(reacting, jobs[3], EventKind.RUNNING, started_at=time.time())
    scraped = scrape(metrics.registry)
    # Then each ended job is counted once, by status
    d = "EMU_SV"
    assert scraped.value("atomfleet_jobs_finished_total", device_type=d, status="DONE") == 2
    assert scraped.value("atomfleet_jobs_finished_total", device_type=d, status="ERROR") == 1
    assert scraped.value("atomfleet_jobs_requeued_total", device_type=d) == 1
    # And a queue wait is observed once per job that started (not again after its requeue)
    assert scraped.value("atomfleet_job_queue_wait_seconds_count", device_type=d) == 3
    # And a run time per job that ended having started, about 2 s each
    assert scraped.value("atomfleet_job_run_seconds_count", device_type=d) == 2
    assert 3.5 < scraped.value("atomfleet_job_run_seconds_sum", device_type=d) < 10


def test_the_loop_clock_is_healthy_while_every_loop_turns() -> None:
    clock = LoopClock({"dispatch": 0.0, "events": 0.0}, margin_s=0.2)
    assert clock.health().ok
    time.sleep(0.3)
    clock.turned("dispatch")
    health = clock.health()
    assert not health.ok and "events" in health.detail and "dispatch" not in health.detail
    before = clock.oldest_turn()
    clock.turned("events")
    assert clock.health().ok and clock.oldest_turn() > before
