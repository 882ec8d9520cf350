"""The dispatcher: a bounded window per device in Redis, HIGH before MEDIUM before LOW, FIFO."""

from __future__ import annotations

import base64
import json
import time

import redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from core.enums import DeviceType, QueuePriority
from core.messages import JobSpec
from core.names import RedisKeys, queue_name
from scheduler.dispatch import Dispatcher, make_producer
from scheduler.intake import Caller, Intake
from scheduler.models import Job
from scheduler.submissions import CreateBatchRequest
from tests.conftest import Account
from tests.sequences import parametrized_sweep


def submit(sessions: sessionmaker[Session], account: Account, jobs: int, priority: str,
           device: str = "EMU_MPS") -> list[str]:  # fmt: skip
    request = CreateBatchRequest(
        project_id=account.project_id,
        device_type=device,
        queue_priority=priority,
        sequence_builder=parametrized_sweep(3),
        jobs=[{"runs": 10 + i, "variables": {"omega": 5.0, "duration": 300}} for i in range(jobs)],
    )
    with sessions.begin() as session:
        submission = Intake(Settings()).create_batch(session, request, Caller(account.user_id))
        return [row["id"] for row in submission.jobs]


def queued(client: redis.Redis, settings: Settings, device: DeviceType) -> dict[str, list[JobSpec]]:
    keys = RedisKeys(settings.namespace)
    found: dict[str, list[JobSpec]] = {}
    for level in QueuePriority:
        # Celery LPUSHes: the oldest message is at the right end.
        raw = reversed(client.lrange(keys.celery_queue(queue_name(device, level)), 0, -1))
        specs = []
        for message in raw:
            body = json.loads(message)
            args = json.loads(base64.b64decode(body["body"]))[0]
            spec = JobSpec.model_validate(args[0])
            assert body["headers"]["id"] == f"{spec.job_id}.{spec.attempt}"
            specs.append(spec)
        found[level.value] = specs
    return found


def make_dispatcher(settings: Settings, sessions: sessionmaker[Session], window: int) -> Dispatcher:
    settings.dispatch_window_per_device = window
    client = redis.Redis.from_url(settings.redis_url)
    return Dispatcher(settings, sessions, client, make_producer(settings), settings.devices)


def worker_beats(
    client: redis.Redis, settings: Settings, device: DeviceType, concurrency: int
) -> None:
    """What a live worker of `device` writes on each heartbeat."""
    keys = RedisKeys(settings.namespace)
    client.zadd(keys.workers(device), {"host:1": time.time()})
    client.hset(keys.worker_info(device), "host:1", json.dumps({"concurrency": concurrency}))


def waiting(client: redis.Redis, settings: Settings, device: DeviceType) -> int:
    return sum(len(specs) for specs in queued(client, settings, device).values())


def test_the_window_holds_a_message_per_free_slot_and_the_backlog_stays_in_the_database(
    settings: Settings, sessions: sessionmaker[Session], account: Account,
    redis_client: redis.Redis,
) -> None:  # fmt: skip
    # Given 6 jobs and no worker yet
    submit(sessions, account, 6, "MEDIUM")
    dispatcher = make_dispatcher(settings, sessions, window=4)
    # Then one message waits in Redis, whatever the passes, and the dispatcher knows it
    # still has backlog to send
    assert dispatcher.dispatch_once() is True
    assert dispatcher.dispatch_once() is True
    assert waiting(redis_client, settings, DeviceType.EMU_MPS) == 1
    # When workers with 3 slots beat, 3 wait
    worker_beats(redis_client, settings, DeviceType.EMU_MPS, 3)
    dispatcher.state[DeviceType.EMU_MPS].slots_at = 0  # do not wait for the slots' refresh
    dispatcher.dispatch_once()
    assert waiting(redis_client, settings, DeviceType.EMU_MPS) == 3
    # and with 10 slots, nothing more while the queue is above half the window; once the
    # workers took it down to that low-water mark, it is refilled to the maximum (4)
    worker_beats(redis_client, settings, DeviceType.EMU_MPS, 10)
    dispatcher.state[DeviceType.EMU_MPS].slots_at = 0
    dispatcher.dispatch_once()
    assert waiting(redis_client, settings, DeviceType.EMU_MPS) == 3
    keys = RedisKeys(settings.namespace)
    assert redis_client.get(keys.dispatch_low_water(DeviceType.EMU_MPS)) == b"2"
    redis_client.rpop(keys.celery_queue("EMU_MPS.medium"))  # a worker takes one
    dispatcher.dispatch_once()
    assert waiting(redis_client, settings, DeviceType.EMU_MPS) == 4
    # And the rest stays in the database
    with sessions() as session:
        backlog = session.scalar(
            select(func.count()).select_from(Job).where(Job.dispatched_at.is_(None))
        )
    assert backlog == 1


def test_an_emptied_backlog_is_not_read_again_until_something_wakes_the_dispatcher(
    settings: Settings, sessions: sessionmaker[Session], account: Account,
    redis_client: redis.Redis,
) -> None:  # fmt: skip
    # Given a dispatcher that sent everything there was
    submit(sessions, account, 1, "MEDIUM")
    dispatcher = make_dispatcher(settings, sessions, window=4)
    worker_beats(redis_client, settings, DeviceType.EMU_MPS, 4)
    assert dispatcher.dispatch_once() is False
    assert not dispatcher.state[DeviceType.EMU_MPS].backlog
    # When a job arrives without a wake-up, it stays in the backlog
    submit(sessions, account, 1, "MEDIUM")
    dispatcher.dispatch_once()
    assert waiting(redis_client, settings, DeviceType.EMU_MPS) == 1
    # When intake's wake-up names the device, it goes out
    keys = RedisKeys(settings.namespace)
    redis_client.lpush(keys.dispatch_wakeup, "EMU_MPS")
    dispatcher.wait_for_work(1.0)
    dispatcher.dispatch_once()
    assert waiting(redis_client, settings, DeviceType.EMU_MPS) == 2


def test_jobs_go_out_by_level_then_in_submission_order(
    settings: Settings, sessions: sessionmaker[Session], account: Account,
    redis_client: redis.Redis,
) -> None:  # fmt: skip
    low = submit(sessions, account, 2, "LOW")
    medium = submit(sessions, account, 2, "MEDIUM")
    high = submit(sessions, account, 2, "HIGH")
    sv = submit(sessions, account, 1, "HIGH", device="EMU_SV")
    dispatcher = make_dispatcher(settings, sessions, window=1)
    dispatcher.dispatch_once()
    first = queued(redis_client, settings, DeviceType.EMU_MPS)
    assert [s.job_id for s in first["HIGH"]] == [high[0]]  # submitted last, sent first
    dispatcher.settings.dispatch_window_per_device = 10
    worker_beats(redis_client, settings, DeviceType.EMU_MPS, 10)
    dispatcher.state[DeviceType.EMU_MPS].slots_at = 0
    dispatcher.dispatch_once()
    found = queued(redis_client, settings, DeviceType.EMU_MPS)
    assert [s.job_id for s in found["HIGH"]] == high
    assert [s.job_id for s in found["MEDIUM"]] == medium
    assert [s.job_id for s in found["LOW"]] == low
    assert [s.job_id for s in queued(redis_client, settings, DeviceType.EMU_SV)["HIGH"]] == sv
    spec = found["MEDIUM"][1]
    assert (spec.runs, spec.variables, spec.attempt) == (11, {"omega": 5.0, "duration": 300}, 1)
    keys = RedisKeys(settings.namespace)
    assert redis_client.get(keys.current_attempt(spec.job_id)) == b"1"
