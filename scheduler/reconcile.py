"""Reconciliation: finds accepted jobs that no worker will finish, and queues them again.

A job is lost when its message vanished (a Redis restart) or its worker died mid-run
(the lease it renews expired). Such a job goes back to the backlog, up to
`max_attempts` times; then it ends in ERROR with the reason.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

import redis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from core.enums import ACTIVE_JOB_STATUSES, DeviceType, JobStatus
from core.names import RedisKeys, device_queues
from scheduler.dispatch import job_id_of_task
from scheduler.ledger import batch_ids_of, ledger, lock_batches, lock_jobs
from scheduler.models import Job, utcnow

log = logging.getLogger(__name__)


def job_fields(job: Job) -> dict[str, str]:
    """A job's ids for a log line (core/logs.py)."""
    return {"job_id": job.id, "batch_id": job.batch_id, "device_type": job.device_type.value}


class Reconciler:
    """Requeues a dispatched job once it has been unaccounted for during `lost_grace_s`.

    Accounted for means waiting in one of its device's queues, or leased by a live worker.
    A message a dead worker had taken stays in kombu's `unacked` hash until the visibility
    timeout, so that hash is no sign of life; the lease is. A dead worker's job is thus
    back in the backlog within `lease_ttl_s + lost_grace_s + reconcile_interval_s`.
    """

    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        client: redis.Redis,
        devices: Iterable[DeviceType],
        ready: Callable[[], bool] = lambda: True,
    ) -> None:
        self.settings = settings
        self.ready = ready
        self.sessions = sessions
        self.client = client
        self.keys = RedisKeys(settings.namespace)
        self.devices = list(devices)
        self._suspects: dict[str, float] = {}  # job id -> when first seen unaccounted for

    def reconcile_once(self) -> int:
        """Requeue every lost job; returns how many were requeued or failed."""
        if not self.ready():
            return 0  # a job's final event may still wait in the stream
        now = utcnow()
        dispatched_before = now - timedelta(seconds=self.settings.lost_grace_s)
        with self.sessions() as session:
            candidates = list(
                session.scalars(
                    select(Job.id).where(
                        Job.device_type.in_(self.devices),
                        Job.status.in_(ACTIVE_JOB_STATUSES),
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
        lost = [j for j, t in self._suspects.items() if clock - t >= self.settings.lost_grace_s]
        if lost:
            self._requeue(lost, now)
        for job_id in lost:
            del self._suspects[job_id]
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
        pipe = self.client.pipeline(transaction=False)
        for device in self.devices:
            for queue in device_queues(device):
                pipe.lrange(self.keys.celery_queue(queue), 0, -1)
        found = set()
        for messages in pipe.execute():
            for raw in messages:
                task = _task_id(_loads(raw))
                if task:
                    found.add(job_id_of_task(task))
        return found

    def _requeue(self, job_ids: list[str], now: datetime) -> None:
        with self.sessions.begin() as session:
            book = ledger(session)
            batches = lock_batches(session, batch_ids_of(session, job_ids).values())
            jobs = lock_jobs(session, job_ids)
            for job in jobs.values():
                if job.status.is_terminal or job.dispatched_at is None:
                    continue  # it ended, or was requeued, meanwhile
                batch = batches[job.batch_id]
                if job.attempt >= self.settings.max_attempts:
                    job.errors = [
                        f"the job was lost {job.attempt} times (worker or broker failure)"
                    ]
                    book.move(batch, job, JobStatus.ERROR, now)
                    log.warning("job %s failed after %d lost attempts", job.id, job.attempt,
                                extra=job_fields(job))  # fmt: skip
                    continue
                log.warning("job %s (attempt %d) was lost; queueing it again", job.id,
                            job.attempt, extra=job_fields(job))  # fmt: skip
                book.requeue(batch, job, now)


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
