"""Reconciliation: finds accepted jobs that no worker will finish, and queues them again.

A job is lost when its message vanished (a Redis restart) or its worker died mid-run
(the lease it renews expired). Such a job goes back to the backlog, up to
`max_attempts` times; then it ends in ERROR with the reason.
"""

from __future__ import annotations

import json
import logging
import time
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
    """Requeues a dispatched job once it has been unaccounted for during `lease_ttl_s`.

    Accounted for means waiting in one of its device's queues, or leased by a live worker.
    A message a dead worker had taken stays in kombu's `unacked` hash until the visibility
    timeout, so that hash is no sign of life; the lease is. The grace period covers the
    moment between a worker taking a message and taking the lease.
    """

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
        self._suspects: dict[str, float] = {}  # job id -> when first seen unaccounted for

    def reconcile_once(self) -> int:
        """Requeue every lost job; returns how many were requeued or failed."""
        now = utcnow()
        dispatched_before = now - timedelta(seconds=self.settings.redispatch_after_s)
        with self.sessions.begin() as session:
            candidates = list(
                session.scalars(
                    select(Job.id).where(
                        Job.status.in_([JobStatus.PENDING, JobStatus.RUNNING]),
                        Job.dispatched_at.is_not(None),
                        Job.dispatched_at < dispatched_before,
                    )
                )
            )
        unaccounted = self._unaccounted(candidates)
        clock = time.monotonic()
        self._suspects = {j: t for j, t in self._suspects.items() if j in unaccounted}
        for job_id in unaccounted:
            self._suspects.setdefault(job_id, clock)
        lost = [j for j, t in self._suspects.items() if clock - t >= self.settings.lease_ttl_s]
        for job_id in lost:
            self._requeue(job_id, now)
            del self._suspects[job_id]
        if lost:
            self.client.lpush(self.keys.dispatch_wakeup, 1)
        return len(lost)

    def _unaccounted(self, job_ids: list[str]) -> set[str]:
        if not job_ids:
            return set()
        waiting = self._jobs_waiting()
        pipe = self.client.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.exists(self.keys.lease(job_id))
        leased = pipe.execute()
        return {j for j, held in zip(job_ids, leased, strict=True) if not held and j not in waiting}

    def _jobs_waiting(self) -> set[str]:
        """Ids of jobs with a message waiting in one of the devices' queues."""
        found = set()
        for device in self.devices:
            for queue in device_queues(device):
                for raw in self.client.lrange(self.keys.celery_queue(queue), 0, -1):
                    task = _task_id(_loads(raw))
                    if task:
                        found.add(job_id_of_task(task))
        return found

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
