"""What users do to batches and jobs after creating them: add jobs, close, cancel, rebatch, tag.

Every operation runs inside the caller's transaction and locks the batch row first (the
lock order of the whole scheduler: batch, then job), so it cannot race the events consumer.
Redis side effects (cancel flags, waking the dispatcher) come after the commit, from the API.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.enums import BatchStatus, JobStatus
from core.errors import ConflictError, InvalidRequestError
from scheduler import queries
from scheduler.intake import Caller, Intake, set_tags
from scheduler.listing import JobFilters, job_conditions
from scheduler.models import Batch, Job, new_id, utcnow
from scheduler.state import move_job, refresh_batch
from scheduler.submissions import JobIn

_ENDED = frozenset(
    {BatchStatus.DONE, BatchStatus.ERROR, BatchStatus.CANCELED, BatchStatus.TIMED_OUT}
)


@dataclass
class Canceled:
    """Jobs moved to CANCELED; their ids get a cancel flag in Redis once committed."""

    jobs: list[Job]


def add_jobs(
    session: Session,
    intake: Intake,
    caller: Caller,
    batch_id: str,
    jobs: list[JobIn],
    explicit_null_sequence: list[bool],
) -> Batch:
    """Append jobs to an open batch (409 when it is closed or ended).

    A job sent with an explicit `"sequence": null` and the runs and variables of a job
    already in the batch is a retry (the SDK's `batch.retry(job)` sends exactly that): it
    gets that job as its `parent_id`.
    """
    batch = queries.get_batch(session, caller.user_id, batch_id, lock=True)
    if not batch.open:
        raise ConflictError(f"batch {batch_id} is closed: it accepts no new jobs")
    if batch.status in _ENDED:
        raise ConflictError(f"batch {batch_id} is {batch.status.value}: it accepts no new jobs")
    if not jobs:
        raise InvalidRequestError.single("body", "give at least one job")
    parents = _retried(session, batch, jobs, explicit_null_sequence)
    intake.add_jobs(session, batch, jobs, caller, parents)
    refresh_batch(batch, utcnow())
    return batch


def _retried(
    session: Session, batch: Batch, jobs: list[JobIn], explicit_null: list[bool]
) -> list[str | None]:
    if not any(explicit_null):
        return [None] * len(jobs)
    existing = queries.jobs_of_batch(session, batch.id)
    parents: list[str | None] = []
    for job, is_retry in zip(jobs, explicit_null, strict=True):
        match = None
        if is_retry:
            for old in reversed(existing):  # the latest attempt is the one retried
                if (
                    old.sequence is None
                    and old.variables == job.variables
                    and (job.runs is None or old.runs == job.runs)
                ):
                    match = old.id
                    break
        parents.append(match)
    return parents


def close(session: Session, user_id: str, batch_id: str) -> Batch:
    """Close an open batch; closing a closed batch changes nothing."""
    batch = queries.get_batch(session, user_id, batch_id, lock=True)
    if batch.open:
        batch.open = False
        refresh_batch(batch, utcnow())
    return batch


def _cancel_jobs(session: Session, batch: Batch, jobs: list[Job], now: datetime) -> list[Job]:
    canceled = []
    for job in jobs:
        locked = session.scalars(select(Job).where(Job.id == job.id).with_for_update()).one()
        if move_job(batch, locked, JobStatus.CANCELED, now):
            canceled.append(locked)
    return canceled


def cancel_batch(session: Session, user_id: str, batch_id: str) -> tuple[Batch, Canceled]:
    """Cancel every PENDING and RUNNING job and the batch (409 once the batch has ended)."""
    batch = queries.get_batch(session, user_id, batch_id, lock=True)
    if batch.status in _ENDED:
        raise ConflictError(f"batch {batch_id} is {batch.status.value}: it cannot be canceled")
    now = utcnow()
    active = session.scalars(
        select(Job).where(
            Job.batch_id == batch.id, Job.status.in_([JobStatus.PENDING, JobStatus.RUNNING])
        )
    ).all()
    canceled = _cancel_jobs(session, batch, list(active), now)
    batch.open = False
    batch.status = BatchStatus.CANCELED
    batch.end_datetime = batch.end_datetime or now
    batch.updated_at = now
    return batch, Canceled(canceled)


def cancel_job(session: Session, user_id: str, job_id: str) -> tuple[Job, Canceled]:
    """Cancel one job (409 when it has already ended)."""
    job = queries.get_job(session, user_id, job_id)
    batch = queries.get_batch(session, user_id, job.batch_id, lock=True)
    if job.status.is_terminal:
        raise ConflictError(f"job {job_id} is {job.status.value}: it cannot be canceled")
    canceled = _cancel_jobs(session, batch, [job], utcnow())
    return job, Canceled(canceled)


def cancel_jobs(
    session: Session, user_id: str, batch_id: str, filters: JobFilters
) -> tuple[list[Job], dict[str, str], Canceled]:
    """Cancel the batch's jobs that match `filters`; the others that match are errors."""
    batch = queries.get_batch(session, user_id, batch_id, lock=True)
    matching = session.scalars(
        select(Job)
        .where(Job.batch_id == batch.id, *job_conditions(filters))
        .order_by(Job.creation_order)
    ).all()
    errors = {
        job.id: f"job is {job.status.value}: it cannot be canceled"
        for job in matching
        if job.status.is_terminal
    }
    active = [job for job in matching if not job.status.is_terminal]
    canceled = _cancel_jobs(session, batch, active, utcnow())
    return canceled, errors, Canceled(canceled)


def rebatch(session: Session, user_id: str, batch_id: str, filters: JobFilters) -> Batch:
    """A new closed batch re-running the jobs of `batch_id` that match `filters`."""
    old = queries.get_batch(session, user_id, batch_id)
    jobs = session.scalars(
        select(Job)
        .where(Job.batch_id == old.id, *job_conditions(filters))
        .order_by(Job.creation_order)
    ).all()
    if not jobs:
        raise InvalidRequestError.single("filters", "no job of the batch matches them")
    now = utcnow()
    new = Batch(
        id=new_id(),
        project_id=old.project_id,
        user_id=user_id,
        parent_id=old.id,
        status=BatchStatus.PENDING,
        open=False,
        device_type=old.device_type,
        queue_priority=old.queue_priority,
        sequence_builder=old.sequence_builder,
        backend_configuration=old.backend_configuration,
        configuration=old.configuration,
        webhook=old.webhook,
        tags=[],
        created_at=now,
        updated_at=now,
        jobs_count=len(jobs),
        count_pending=len(jobs),
    )
    session.add(new)
    session.flush()
    set_tags(session, new, list(old.tags or []))
    for order, job in enumerate(jobs):
        session.add(
            Job(
                id=new_id(),
                batch_id=new.id,
                project_id=new.project_id,
                user_id=user_id,
                parent_id=job.id,
                creation_order=order,
                status=JobStatus.PENDING,
                runs=job.runs,
                variables=job.variables,
                sequence=job.sequence,
                progress=0,
                created_at=now,
                updated_at=now,
                device_type=job.device_type,
                priority_rank=job.priority_rank,
                attempt=0,
            )
        )
    session.flush()
    return new


def replace_tags(session: Session, user_id: str, batch_id: str, tags: list[Any]) -> Batch:
    if not all(isinstance(t, str) for t in tags):
        raise InvalidRequestError.single("body", "tags must be a JSON array of strings")
    batch = queries.get_batch(session, user_id, batch_id, lock=True)
    set_tags(session, batch, tags)
    batch.updated_at = utcnow()
    return batch
