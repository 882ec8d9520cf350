"""The events consumer: worker reports become job and batch state, idempotent and monotonic."""

from __future__ import annotations

from typing import Any

import redis
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from core.enums import BatchStatus, EventKind, JobStatus
from core.messages import JobEvent, JobResult
from core.names import RedisKeys
from scheduler.db import make_sessionmaker
from scheduler.events import EventsConsumer, apply_events
from scheduler.intake import Caller, Intake
from scheduler.models import Batch, Job, Result
from scheduler.reactions import redis_reactor
from scheduler.submissions import CreateBatchRequest
from tests.conftest import Account
from tests.sequences import parametrized_sweep


def submit(sessions: sessionmaker[Session], account: Account, jobs: int = 2) -> list[str]:
    request = CreateBatchRequest(
        project_id=account.project_id,
        device_type="EMU_SV",
        sequence_builder=parametrized_sweep(3),
        jobs=[{"runs": 10, "variables": {"omega": 5.0, "duration": 300}}] * jobs,
    )
    with sessions.begin() as session:
        submission = Intake(Settings()).create_batch(session, request, Caller(account.user_id))
        ids = [row["id"] for row in submission.jobs]
        session.execute(update(Job).where(Job.id.in_(ids)).values(attempt=1))
    return ids


def apply(sessions: sessionmaker[Session], job_id: str, kind: EventKind, **fields: Any) -> None:
    with sessions.begin() as session:
        apply_events(session, [JobEvent(job_id=job_id, attempt=fields.pop("attempt", 1),
                                        kind=kind, **fields)])  # fmt: skip


def state(sessions: sessionmaker[Session], job_id: str) -> tuple[Job, Batch]:
    with sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None
        batch = session.get(Batch, job.batch_id)
        assert batch is not None
        return job, batch


def test_a_job_moves_through_running_progress_and_done_with_the_batch(
    sessions: sessionmaker[Session], account: Account
) -> None:
    first, second = submit(sessions, account)
    apply(sessions, first, EventKind.RUNNING, progress=0)
    job, batch = state(sessions, first)
    assert (job.status, batch.status) == (JobStatus.RUNNING, BatchStatus.RUNNING)
    assert job.start_timestamp is not None and batch.start_datetime is not None
    apply(sessions, first, EventKind.PROGRESS, progress=40)
    apply(sessions, first, EventKind.DONE, result=JobResult(counter={"101": 10}))
    job, batch = state(sessions, first)
    assert (job.status, job.progress) == (JobStatus.DONE, 100)
    assert job.end_timestamp is not None
    assert (batch.count_done, batch.count_pending, batch.status) == (1, 1, BatchStatus.RUNNING)
    apply(sessions, second, EventKind.DONE, result=JobResult(counter={"000": 10}))
    _, batch = state(sessions, second)
    assert batch.status == BatchStatus.DONE and batch.end_datetime is not None
    with sessions() as session:
        result = session.get(Result, first)
        assert result is not None and result.counter == {"101": 10}


def test_duplicated_late_and_backward_events_change_nothing(
    sessions: sessionmaker[Session], account: Account
) -> None:
    (job_id, _) = submit(sessions, account)
    apply(sessions, job_id, EventKind.PROGRESS, progress=60)
    apply(sessions, job_id, EventKind.PROGRESS, progress=30)  # out of order
    assert state(sessions, job_id)[0].progress == 60
    apply(sessions, job_id, EventKind.DONE, result=JobResult(counter={"1": 1}))
    apply(sessions, job_id, EventKind.DONE, result=JobResult(counter={"0": 9}))  # duplicate
    apply(sessions, job_id, EventKind.RUNNING)  # late
    apply(sessions, job_id, EventKind.ERROR, errors=["late"])  # late
    job, batch = state(sessions, job_id)
    assert (job.status, job.errors) == (JobStatus.DONE, None)
    assert (batch.count_done, batch.count_running, batch.count_error) == (1, 0, 0)
    with sessions() as session:
        result = session.get(Result, job_id)
        assert result is not None and result.counter == {"1": 1}


def test_stale_attempts_are_ignored_but_their_results_are_kept(
    sessions: sessionmaker[Session], account: Account
) -> None:
    first, second = submit(sessions, account)
    with sessions.begin() as session:
        session.execute(update(Job).values(attempt=2))
    apply(sessions, first, EventKind.ERROR, attempt=1, errors=["old worker"])
    assert state(sessions, first)[0].status == JobStatus.PENDING
    apply(sessions, second, EventKind.DONE, attempt=1, result=JobResult(counter={"0": 10}))
    assert state(sessions, second)[0].status == JobStatus.DONE


def test_an_error_ends_the_job_and_then_the_batch_in_error(
    sessions: sessionmaker[Session], account: Account
) -> None:
    (job_id,) = submit(sessions, account, jobs=1)
    apply(sessions, job_id, EventKind.ERROR, errors=["the sequence could not be built"])
    job, batch = state(sessions, job_id)
    assert job.status == JobStatus.ERROR and job.errors == ["the sequence could not be built"]
    assert batch.status == BatchStatus.ERROR


def test_the_consumer_applies_acknowledges_and_deletes_stream_entries(
    sessions: sessionmaker[Session], account: Account, settings: Settings,
    redis_client: redis.Redis,
) -> None:  # fmt: skip
    (job_id, _) = submit(sessions, account)
    keys = RedisKeys(settings.namespace)
    # The scheduler's sessions: committed changes wake the dispatcher.
    reacting = make_sessionmaker(sessions.kw["bind"], [redis_reactor(redis_client, settings)])
    consumer = EventsConsumer(redis_client, keys, reacting)
    consumer.ensure_group()
    for event in (
        JobEvent(job_id=job_id, attempt=1, kind=EventKind.RUNNING),
        JobEvent(job_id=job_id, attempt=1, kind=EventKind.DONE, result=JobResult(counter={})),
        JobEvent(job_id="no-such-job", attempt=1, kind=EventKind.RUNNING),
    ):
        redis_client.xadd(keys.events_stream, event.to_fields())  # type: ignore[arg-type]
    handled = sum(consumer.consume_once(block_ms=100) for _ in range(3))
    assert handled == 3  # the unknown job's event is consumed and dropped
    assert state(sessions, job_id)[0].status == JobStatus.DONE
    assert redis_client.xlen(keys.events_stream) == 0
    # The job ended: the dispatcher is woken for its device
    assert redis_client.lrange(keys.dispatch_wakeup, 0, -1) == [b"EMU_SV"]


def test_the_consumer_recreates_its_group_after_redis_lost_it(
    sessions: sessionmaker[Session], account: Account, settings: Settings,
    redis_client: redis.Redis,
) -> None:  # fmt: skip
    (job_id, _) = submit(sessions, account)
    keys = RedisKeys(settings.namespace)
    # The scheduler's sessions: committed changes wake the dispatcher.
    reacting = make_sessionmaker(sessions.kw["bind"], [redis_reactor(redis_client, settings)])
    consumer = EventsConsumer(redis_client, keys, reacting)
    consumer.ensure_group()
    consumer.consume_once(block_ms=10)  # past the replay of pending entries
    redis_client.delete(keys.events_stream)  # what a Redis restart without data does
    assert consumer.consume_once(block_ms=10) == 0
    redis_client.xadd(keys.events_stream,
                      JobEvent(job_id=job_id, attempt=1, kind=EventKind.RUNNING).to_fields())  # type: ignore[arg-type]  # fmt: skip
    handled = 0
    for _ in range(5):
        handled += consumer.consume_once(block_ms=100)
    assert handled == 1
    assert state(sessions, job_id)[0].status == JobStatus.RUNNING
