"""Consumes the workers' job events from the Redis stream and writes them to the store.

Entries are handled in one transaction per read (a few statements, whatever their number),
then acknowledged and deleted, so an entry is removed only once its effect is committed.
Handling is idempotent and monotonic: a replayed, duplicated or late event changes nothing.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

import redis
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.enums import EventKind, JobStatus
from core.messages import JobEvent
from core.names import EVENTS_GROUP, RedisKeys
from scheduler.ledger import Ledger, batch_ids_of, ledger, lock_batches, lock_jobs
from scheduler.models import Batch, Job, Result

log = logging.getLogger(__name__)

GATHER_S = 0.01


class EventsConsumer:
    def __init__(
        self,
        client: redis.Redis,
        keys: RedisKeys,
        sessions: sessionmaker[Session],
        consumer: str = "scheduler-1",
    ) -> None:
        self.client = client
        self.keys = keys
        self.sessions = sessions
        self.consumer = consumer
        self._replay_pending = True
        self._caught_up = False
        self._entries: list[Any] = []  # read, not yet applied
        self._trickle = False
        self._drained = False

    def ensure_group(self) -> None:
        try:
            self.client.xgroup_create(self.keys.events_stream, EVENTS_GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def caught_up(self) -> bool:
        """True once a read found fewer entries than it asked for and they are applied (the
        stream is drained)."""
        return self._caught_up

    def consume_once(self, block_ms: int = 1000, count: int = 200) -> int:
        """Handle one read of events; returns how many entries were handled."""
        self.read(block_ms, count)
        return self.handle()

    def read(self, block_ms: int = 1000, count: int = 200) -> None:
        """Wait for the next entries (up to `block_ms`); `handle` applies them.

        The scheduler's loop times `handle` only: this is waiting, not work.
        """
        if self._entries:
            return  # the last read is not applied yet (its transaction failed): retry it first
        if self._trickle:
            # A trickle: let a few milliseconds' worth gather, so that a busy fleet's events
            # are applied in larger transactions (fewer commits, far less work per event).
            self._trickle = False
            time.sleep(GATHER_S)
        # After a restart, first replay what this consumer read but never acknowledged.
        start = "0" if self._replay_pending else ">"
        try:
            reply: Any = self.client.xreadgroup(
                EVENTS_GROUP,
                self.consumer,
                {self.keys.events_stream: start},
                count=count,
                block=None if self._replay_pending else block_ms,
            )
        except redis.ResponseError as exc:
            if "NOGROUP" in str(exc):  # Redis lost its data: recreate and carry on
                self.ensure_group()
                return
            raise
        entries = reply[0][1] if reply else []
        if self._replay_pending and not entries:
            self._replay_pending = False
            return
        drained = not self._replay_pending and len(entries) < count
        if not entries:
            self._caught_up = drained
        self._entries, self._drained = entries, drained
        self._trickle = 0 < len(entries) < count // 8

    def handle(self) -> int:
        """Apply the entries of the last read in one transaction, then acknowledge and delete
        them; returns how many were handled."""
        entries, self._entries = self._entries, []
        if not entries:
            return 0
        events = []
        for _entry_id, fields in entries:
            try:
                events.append(JobEvent.from_fields(fields))
            except (ValidationError, ValueError):
                log.exception("dropping malformed event %r", fields)
        try:
            with self.sessions.begin() as session:
                apply_events(session, events)
        except BaseException:
            self._entries = entries  # not applied: the next turn tries them again
            raise
        ids = [entry_id for entry_id, _ in entries]
        pipe = self.client.pipeline(transaction=False)
        pipe.xack(self.keys.events_stream, EVENTS_GROUP, *ids)
        pipe.xdel(self.keys.events_stream, *ids)
        pipe.execute()
        # Caught up once what a short read returned is applied, not merely read.
        self._caught_up = self._drained
        return len(entries)


def apply_events(session: Session, events: list[JobEvent]) -> None:
    """Apply a read of worker events to the store, inside the caller's transaction.

    A few statements whatever the number of events: the jobs' batches and the jobs are
    locked once each (the ledger's lock order), existing results read once, and the
    changes flushed together at commit.
    """
    batch_of = batch_ids_of(session, (e.job_id for e in events))
    unknown = {e.job_id for e in events} - set(batch_of)
    for job_id in unknown:
        log.warning("event for unknown job %s", job_id, extra={"job_id": job_id})
    events = [e for e in events if e.job_id in batch_of]
    if not events:
        return
    batches = lock_batches(session, batch_of.values())
    jobs = lock_jobs(session, batch_of)
    done = [e.job_id for e in events if e.kind == EventKind.DONE and e.result is not None]
    has_result = set(
        session.scalars(select(Result.job_id).where(Result.job_id.in_(done))) if done else []
    )
    book = ledger(session)
    for event in events:
        job = jobs[event.job_id]
        _apply(book, session, batches[job.batch_id], job, event, has_result)


def _apply(
    book: Ledger,
    session: Session,
    batch: Batch,
    job: Job,
    event: JobEvent,
    has_result: set[str],
) -> None:
    # A result is a result whichever attempt produced it; anything else must be current.
    if event.attempt != job.attempt and event.kind != EventKind.DONE:
        return
    if job.status.is_terminal:
        return
    at = datetime.fromtimestamp(event.at, UTC)
    if event.remote_id and job.remote_id != event.remote_id:
        job.remote_id = event.remote_id  # a new attempt resumes it instead of starting over
    if event.kind in (EventKind.RUNNING, EventKind.PROGRESS):
        started = datetime.fromtimestamp(event.started_at, UTC) if event.started_at else at
        book.move(batch, job, JobStatus.RUNNING, started)
        if event.progress is not None and event.progress > job.progress:
            job.progress = event.progress
            job.updated_at = at
    elif event.kind == EventKind.DONE and event.result is not None:
        if job.id not in has_result:
            session.add(
                Result(
                    job_id=job.id,
                    counter=event.result.counter,
                    serialised_results=event.result.serialised_results,
                )
            )
            has_result.add(job.id)
        job.progress = 100
        start = event.started_at if event.started_at is not None else event.at
        book.move(batch, job, JobStatus.DONE, at, started_at=datetime.fromtimestamp(start, UTC))
    elif event.kind == EventKind.ERROR:
        job.errors = event.errors or ["the job failed"]
        began = (
            datetime.fromtimestamp(event.started_at, UTC) if event.started_at is not None else None
        )
        book.move(batch, job, JobStatus.ERROR, at, started_at=began)
