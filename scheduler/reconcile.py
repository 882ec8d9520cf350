"""Reconciliation: finds accepted jobs that no worker will finish, and queues them again.

A job is lost when its message vanished (a Redis restart) or its worker died mid-run
(the lease it renews expired). Such a job goes back to the backlog, up to
`max_attempts` times; then it ends in ERROR with the reason.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import redis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from core.enums import DeviceType, JobStatus
from core.names import RedisKeys, device_queues
from scheduler.dispatch import job_id_of_task
from scheduler.models import Batch, Job, utcnow
from scheduler.state import move_job

log = logging.getLogger(__name__)


class Reconciler:
    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        client: redis.Redis,
        devices: Iterable[DeviceType],
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.client = client
        self.keys = RedisKeys(settings.namespace)
        self.devices = list(devices)

    def reconcile_once(self) -> int:
        """Requeue every lost job; returns how many were requeued or failed."""
        now = utcnow()
        dispatched_before = now - timedelta(seconds=self.settings.redispatch_after_s)
        quiet_before = now - timedelta(seconds=self.settings.lease_ttl_s)
        with self.sessions.begin() as session:
            candidates = session.execute(
                select(Job.id, Job.status, Job.dispatched_at, Job.updated_at).where(
                    Job.status.in_([JobStatus.PENDING, JobStatus.RUNNING]),
                    Job.dispatched_at.is_not(None),
                    Job.dispatched_at < dispatched_before,
                )
            ).all()
        if not candidates:
            return 0
        in_redis = self._jobs_in_redis()
        lost = [
            job_id
            for job_id, status, _dispatched, updated in candidates
            if job_id not in in_redis
            and not self.client.exists(self.keys.lease(job_id))
            and (status == JobStatus.PENDING or updated < quiet_before)
        ]
        for job_id in lost:
            self._requeue(job_id, now)
        if lost:
            self.client.lpush(self.keys.dispatch_wakeup, 1)
        return len(lost)

    def _jobs_in_redis(self) -> set[str]:
        """Ids of jobs with a message waiting in a queue or held unacknowledged by a worker."""
        raw: list[Any] = []
        for device in self.devices:
            for queue in device_queues(device):
                raw.extend(self.client.lrange(self.keys.celery_queue(queue), 0, -1))
        found = {_task_id(_loads(msg)) for msg in raw}
        for value in self.client.hvals(self.keys.celery_unacked):
            # kombu keeps [message, exchange, routing_key] for each delivered message
            entry = _loads(value)
            found.add(_task_id(entry[0] if isinstance(entry, list) and entry else None))
        return {job_id_of_task(t) for t in found if t}

    def _requeue(self, job_id: str, now: datetime) -> None:
        with self.sessions.begin() as session:
            job = session.get(Job, job_id)
            if job is None or job.status.is_terminal or job.dispatched_at is None:
                return
            batch = session.scalars(
                select(Batch).where(Batch.id == job.batch_id).with_for_update()
            ).one()
            job = session.scalars(select(Job).where(Job.id == job_id).with_for_update()).one()
            if job.attempt >= self.settings.max_attempts:
                job.errors = [f"the job was lost {job.attempt} times (worker or broker failure)"]
                move_job(batch, job, JobStatus.ERROR, now)
                log.warning("job %s failed after %d lost attempts", job_id, job.attempt)
                return
            log.warning("job %s (attempt %d) was lost; queueing it again", job_id, job.attempt)
            move_job(batch, job, JobStatus.PENDING, now)
            job.dispatched_at = None
            job.progress = 0


def _loads(raw: bytes | str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _task_id(message: Any) -> str:
    try:
        return str(message["headers"]["id"])
    except (KeyError, TypeError):
        return ""
