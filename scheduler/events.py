"""Consumes the workers' job events from the Redis stream and writes them to the store.

Entries are handled in one transaction per read, then acknowledged and deleted, so an
entry is removed only once its effect is committed. Handling is idempotent and monotonic:
a replayed, duplicated or late event changes nothing.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import redis
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.enums import EventKind, JobStatus
from core.messages import JobEvent
from core.names import EVENTS_GROUP, RedisKeys
from scheduler.models import Batch, Job, Result
from scheduler.state import move_job

log = logging.getLogger(__name__)


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

    def ensure_group(self) -> None:
        try:
            self.client.xgroup_create(self.keys.events_stream, EVENTS_GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def consume_once(self, block_ms: int = 1000, count: int = 200) -> int:
        """Handle one read of events; returns how many entries were handled."""
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
                return 0
            raise
        entries = reply[0][1] if reply else []
        if self._replay_pending and not entries:
            self._replay_pending = False
            return 0
        if not entries:
            return 0
        events = []
        for _entry_id, fields in entries:
            try:
                events.append(JobEvent.from_fields(fields))
            except (ValidationError, ValueError):
                log.exception("dropping malformed event %r", fields)
        with self.sessions.begin() as session:
            for event in events:
                handle_event(session, event)
        ids = [entry_id for entry_id, _ in entries]
        pipe = self.client.pipeline(transaction=False)
        pipe.xack(self.keys.events_stream, EVENTS_GROUP, *ids)
        pipe.xdel(self.keys.events_stream, *ids)
        pipe.lpush(self.keys.dispatch_wakeup, 1)
        pipe.ltrim(self.keys.dispatch_wakeup, 0, 0)
        pipe.execute()
        return len(entries)


def handle_event(session: Session, event: JobEvent) -> None:
    """Apply one worker event to the store (inside the caller's transaction)."""
    found = session.execute(
        select(Job.batch_id, Job.attempt).where(Job.id == event.job_id)
    ).one_or_none()
    if found is None:
        log.warning("event for unknown job %s", event.job_id)
        return
    batch_id, attempt = found
    stale = event.attempt != attempt
    # A result is a result whichever attempt produced it; anything else must be current.
    if stale and event.kind != EventKind.DONE:
        return
    # Lock order everywhere: batch, then job.
    batch = session.scalars(select(Batch).where(Batch.id == batch_id).with_for_update()).one()
    job = session.scalars(select(Job).where(Job.id == event.job_id).with_for_update()).one()
    if job.status.is_terminal:
        return
    at = datetime.fromtimestamp(event.at, UTC)
    if event.kind in (EventKind.RUNNING, EventKind.PROGRESS):
        move_job(batch, job, JobStatus.RUNNING, at)
        if event.progress is not None and event.progress > job.progress:
            job.progress = event.progress
            job.updated_at = at
    elif event.kind == EventKind.DONE and event.result is not None:
        if session.get(Result, job.id) is None:
            session.add(
                Result(
                    job_id=job.id,
                    counter=event.result.counter,
                    serialised_results=event.result.serialised_results,
                )
            )
        job.progress = 100
        if job.start_timestamp is None:
            job.start_timestamp = at
        move_job(batch, job, JobStatus.DONE, at)
    elif event.kind == EventKind.ERROR:
        job.errors = event.errors or ["the job failed"]
        move_job(batch, job, JobStatus.ERROR, at)
