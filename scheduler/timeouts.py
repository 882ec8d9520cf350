"""Open batches that stop receiving jobs end TIMED_OUT, as the public status set says.

An open batch whose last job arrived more than `open_batch_timeout_s` ago is closed with
status TIMED_OUT; its PENDING jobs are CANCELED (through the ledger, so counts, cancel
flags and wake-ups follow), and its RUNNING ones finish.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from core.enums import ACTIVE_JOB_STATUSES, BatchStatus, JobStatus
from scheduler.ledger import ledger, lock_batches, lock_jobs
from scheduler.models import Batch, Job, utcnow

log = logging.getLogger(__name__)

_OPEN = (BatchStatus.PENDING, BatchStatus.RUNNING)


class OpenBatchTimeouts:
    interval_s = 5.0

    def __init__(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        self.settings = settings
        self.sessions = sessions

    def time_out_once(self) -> int:
        """Time out every idle open batch; returns how many."""
        cutoff = utcnow() - timedelta(seconds=self.settings.open_batch_timeout_s)
        with self.sessions() as session:
            idle = list(
                session.scalars(
                    select(Batch.id).where(
                        Batch.open.is_(True),
                        Batch.status.in_(_OPEN),
                        Batch.last_job_at < cutoff,
                    )
                )
            )
        for batch_id in idle:
            self._time_out(batch_id, cutoff)
        return len(idle)

    def _time_out(self, batch_id: str, cutoff: datetime) -> None:
        with self.sessions.begin() as session:
            batch = lock_batches(session, [batch_id])[batch_id]
            if not batch.open or batch.status not in _OPEN or batch.last_job_at >= cutoff:
                return  # a job arrived, or it was closed, meanwhile
            now = utcnow()
            pending = session.scalars(
                select(Job.id).where(Job.batch_id == batch_id, Job.status == JobStatus.PENDING)
            ).all()
            book = ledger(session)
            jobs = lock_jobs(session, pending)
            for job in jobs.values():
                book.move(batch, job, JobStatus.CANCELED, now)
            batch.open = False
            batch.status = BatchStatus.TIMED_OUT
            running = sum(batch.counts()[s] for s in ACTIVE_JOB_STATUSES)
            batch.end_datetime = now if not running else batch.end_datetime
            batch.updated_at = now
            log.info("open batch %s timed out; %d pending jobs canceled", batch_id, len(jobs),
                     extra={"batch_id": batch_id})  # fmt: skip
