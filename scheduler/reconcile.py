"""Reconciliation: finds accepted jobs that no worker will finish, and queues them again.

A job is lost when its message vanished (a Redis restart) or its worker died mid-run
(the lease it renews expired, or the worker's parent process recorded the death of the
pool process running it: workers/deaths.py). Such a job goes back to the backlog, up to
`max_attempts` times; then it ends in ERROR with the reason, naming how its worker
processes died when they were seen dying ("the worker process running it was killed
(SIGKILL), 3 times").
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

from core.broker import job_id_of_task
from core.config import Settings
from core.enums import ACTIVE_JOB_STATUSES, DeviceType, JobStatus
from core.names import RedisKeys, device_queues
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
    back in the backlog within `lease_ttl_s + lost_grace_s + reconcile_interval_s`; when
    the worker's parent saw its pool process die (and recorded the death for the job's
    attempt), within `reconcile_interval_s`.
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
            dispatched = select(Job.id, Job.attempt).where(
                Job.device_type.in_(self.devices),
                Job.status.in_(ACTIVE_JOB_STATUSES),
                Job.dispatched_at.is_not(None),
            )
            attempts = dict(session.execute(dispatched).tuples().all())
            candidates = list(
                session.scalars(
                    dispatched.with_only_columns(Job.id).where(
                        Job.dispatched_at < dispatched_before
                    )
                )
            )
        unaccounted = self._unaccounted(candidates)
        died = self._died(attempts)
        clock = time.monotonic()
        self._suspects = {j: t for j, t in self._suspects.items() if j in unaccounted}
        for job_id in unaccounted:
            self._suspects.setdefault(job_id, clock)
        lost = [j for j, t in self._suspects.items() if clock - t >= self.settings.lost_grace_s]
        # A recorded death needs no grace: that attempt will never report.
        lost += [j for j in died if j not in lost]
        if lost:
            self._requeue(lost, now)
        for job_id in lost:
            self._suspects.pop(job_id, None)
        return len(lost)

    def _died(self, attempts: dict[str, int]) -> list[str]:
        """The jobs whose current attempt's worker process was seen dying."""
        if not attempts:
            return []
        pipe = self.client.pipeline(transaction=False)
        for job_id, attempt in attempts.items():
            pipe.hexists(self.keys.deaths(job_id), str(attempt))
        return [j for j, dead in zip(attempts, pipe.execute(), strict=True) if dead]

    def _deaths(self, job_id: str) -> list[str]:
        raw = self.client.hgetall(self.keys.deaths(job_id))
        return [v.decode() if isinstance(v, bytes) else str(v) for v in raw.values()]

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
                    job.errors = [lost_reason(self._deaths(job.id), job.attempt)]
                    book.move(batch, job, JobStatus.ERROR, now)
                    log.warning("job %s failed after %d lost attempts", job.id, job.attempt,
                                extra=job_fields(job))  # fmt: skip
                    continue
                log.warning("job %s (attempt %d) was lost; queueing it again", job.id,
                            job.attempt, extra=job_fields(job))  # fmt: skip
                book.requeue(batch, job, now)


def lost_reason(deaths: list[str], attempts: int) -> str:
    """The final error of a job lost `attempts` times, with the deaths its worker processes
    were seen dying: "the worker process running it was killed (SIGKILL), 3 times"."""
    if not deaths:
        return f"the job was lost {attempts} times (worker or broker failure)"
    counts: dict[str, int] = {}
    for reason in deaths:
        counts[reason] = counts.get(reason, 0) + 1
    text = "the worker process running it " + "; ".join(
        f"{reason}, {n} time{'s' if n > 1 else ''}" for reason, n in counts.items()
    )
    return text + (f" (lost {attempts} times in all)" if len(deaths) < attempts else "")


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
