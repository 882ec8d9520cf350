"""The dispatcher: a bounded window per device in Redis, HIGH before MEDIUM before LOW, FIFO."""

from __future__ import annotations

import base64
import json

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
        submission = Intake(Settings().devices).create_batch(
            session, request, Caller(account.user_id)
        )
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


def test_at_most_the_window_waits_in_redis_and_the_backlog_stays_in_the_database(
    settings: Settings, sessions: sessionmaker[Session], account: Account,
    redis_client: redis.Redis,
) -> None:  # fmt: skip
    submit(sessions, account, 5, "MEDIUM")
    dispatcher = make_dispatcher(settings, sessions, window=2)
    assert dispatcher.dispatch_once() == 2
    assert dispatcher.dispatch_once() == 0  # the window is full
    assert len(queued(redis_client, settings, DeviceType.EMU_MPS)["MEDIUM"]) == 2
    with sessions() as session:
        backlog = session.scalar(
            select(func.count()).select_from(Job).where(Job.dispatched_at.is_(None))
        )
    assert backlog == 3


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
