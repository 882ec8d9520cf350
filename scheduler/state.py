"""The job and batch state machine. Terminal statuses are never left."""

from __future__ import annotations

from datetime import datetime

from core.enums import ACTIVE_JOB_STATUSES, BatchStatus, JobStatus
from scheduler.models import Batch, Job

_FINAL_BATCH = frozenset({BatchStatus.CANCELED, BatchStatus.TIMED_OUT})


def move_job(batch: Batch, job: Job, status: JobStatus, at: datetime) -> bool:
    """Move `job` to `status`, keeping the batch's counters; False if not allowed.

    The only backward move is RUNNING -> PENDING, used when a job's worker was lost.
    """
    if job.status.is_terminal or job.status == status:
        return False
    batch.add_count(job.status, -1)
    batch.add_count(status, +1)
    job.status = status
    job.updated_at = at
    if status == JobStatus.RUNNING and job.start_timestamp is None:
        job.start_timestamp = at
    if status.is_terminal:
        job.end_timestamp = at
    refresh_batch(batch, at)
    return True


def derive_batch_status(batch: Batch) -> BatchStatus:
    if batch.status in _FINAL_BATCH:
        return batch.status
    counts = batch.counts()
    active = sum(counts[s] for s in ACTIVE_JOB_STATUSES)
    started = counts[JobStatus.RUNNING] + counts[JobStatus.DONE] + counts[JobStatus.ERROR]
    if active or batch.open:
        return BatchStatus.RUNNING if started else BatchStatus.PENDING
    if batch.jobs_count and counts[JobStatus.CANCELED] == batch.jobs_count:
        return BatchStatus.CANCELED
    if counts[JobStatus.ERROR]:
        return BatchStatus.ERROR
    return BatchStatus.DONE


def refresh_batch(batch: Batch, at: datetime) -> None:
    status = derive_batch_status(batch)
    counts = batch.counts()
    started = counts[JobStatus.RUNNING] + counts[JobStatus.DONE] + counts[JobStatus.ERROR]
    if started and batch.start_datetime is None:
        # (a job may go from PENDING to DONE directly: it ended before it said RUNNING)
        batch.start_datetime = at
    active = sum(counts[s] for s in ACTIVE_JOB_STATUSES)
    if status in (BatchStatus.DONE, BatchStatus.ERROR, BatchStatus.CANCELED) or (
        status == BatchStatus.TIMED_OUT and not active  # its running jobs have ended too
    ):
        batch.end_datetime = batch.end_datetime or at
    batch.status = status
    batch.updated_at = at


def jobs_count_per_status(batch: Batch) -> dict[str, int]:
    return {status.value: n for status, n in batch.counts().items() if n}
