"""What users do to batches and jobs after creating them: add jobs, close, cancel, rebatch, tag.

Every operation runs inside the caller's transaction and locks the batch row first, then
its jobs (the lock order of `scheduler.ledger`), reading them fresh, so it cannot race the
events consumer, the reconciler or another cancel. Redis side effects (cancel flags,
waking the dispatcher) come after the commit, from the API.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.enums import ENDED_BATCH_STATUSES, BatchStatus, JobStatus
from core.errors import ConflictError, GoneError, InvalidRequestError
from scheduler import queries, quotas
from scheduler.intake import Caller, Intake, job_row, new_batch, persist, set_tags
from scheduler.ledger import ledger, lock_batches, lock_jobs
from scheduler.listing import JobFilters, job_conditions
from scheduler.models import Batch, Job, utcnow
from scheduler.state import refresh_batch
from scheduler.submissions import JobIn


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
    batch = _lock_batch(session, caller.user_id, batch_id)
    if not batch.open:
        raise ConflictError(f"batch {batch_id} is closed: it accepts no new jobs")
    if batch.status in ENDED_BATCH_STATUSES:
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
    batch = _lock_batch(session, user_id, batch_id)
    if batch.open:
        batch.open = False
        refresh_batch(batch, utcnow())
    return batch


def _cancel_locked(session: Session, batch: Batch, job_ids: list[str], now: datetime) -> list[Job]:
    """Cancel the jobs (of the locked `batch`) that are still active, locking them first."""
    book = ledger(session)
    jobs = lock_jobs(session, job_ids)
    return [jobs[i] for i in job_ids if book.move(batch, jobs[i], JobStatus.CANCELED, now)]


def _lock_batch(session: Session, user_id: str, batch_id: str) -> Batch:
    """The caller's batch, locked and read fresh (404 when it is not theirs)."""
    batch = queries.get_batch(session, user_id, batch_id)
    return lock_batches(session, [batch.id])[batch.id]


def cancel_batch(session: Session, user_id: str, batch_id: str) -> Batch:
    """Cancel every PENDING and RUNNING job and the batch (409 once the batch has ended)."""
    batch = _lock_batch(session, user_id, batch_id)
    if batch.status in ENDED_BATCH_STATUSES:
        raise ConflictError(f"batch {batch_id} is {batch.status.value}: it cannot be canceled")
    now = utcnow()
    active = queries.active_job_ids(session, batch.id)
    _cancel_locked(session, batch, active, now)
    batch.open = False
    batch.status = BatchStatus.CANCELED
    batch.end_datetime = batch.end_datetime or now
    batch.updated_at = now
    return batch


def cancel_job(session: Session, user_id: str, job_id: str) -> Job:
    """Cancel one job (409 when it has already ended)."""
    batch_id = queries.get_job(session, user_id, job_id).batch_id
    batch = lock_batches(session, [batch_id])[batch_id]
    job = lock_jobs(session, [job_id])[job_id]
    if job.status.is_terminal:
        raise ConflictError(f"job {job_id} is {job.status.value}: it cannot be canceled")
    _cancel_locked(session, batch, [job_id], utcnow())
    return job


def cancel_jobs(
    session: Session, user_id: str, batch_id: str, filters: JobFilters
) -> tuple[list[Job], dict[str, str]]:
    """Cancel the batch's jobs that match `filters`; the others that match are errors."""
    batch = _lock_batch(session, user_id, batch_id)
    matching = session.execute(
        select(Job.id, Job.status)
        .where(Job.batch_id == batch.id, *job_conditions(filters))
        .order_by(Job.creation_order)
    ).all()
    # Under the batch's lock no job of it changes status: this read is current.
    errors = {
        row.id: f"job is {row.status.value}: it cannot be canceled"
        for row in matching
        if row.status.is_terminal
    }
    active = [row.id for row in matching if not row.status.is_terminal]
    return _cancel_locked(session, batch, active, utcnow()), errors


def rebatch(
    session: Session, intake: Intake, user_id: str, batch_id: str, filters: JobFilters
) -> Batch:
    """A new closed batch re-running the jobs of `batch_id` that match `filters`: a
    submission like any other (its device still served, the project's quotas)."""
    old = queries.get_batch(session, user_id, batch_id)
    intake.check_served(old.device_type)
    jobs = session.execute(
        select(
            Job.id,
            Job.runs,
            Job.variables,
            Job.sequence,
            Job.atoms,
            Job.duration_ns,
            Job.results_purged_at,
        )
        .where(Job.batch_id == old.id, *job_conditions(filters))
        .order_by(Job.creation_order)
    ).all()
    if not jobs:
        raise InvalidRequestError.single("filters", "no job of the batch matches them")
    # A purged job may have lost its own sequence (the builder would then run instead).
    purged = sum(job.results_purged_at is not None for job in jobs)
    if purged:
        raise GoneError(
            f"batch {old.id}: {purged} matching jobs ended long ago and the results retention "
            "deleted their results and sequences; rebatch newer jobs (start_date) or submit "
            "them again"
        )
    quotas.check(session, old.project_id, "filters", batch_jobs=len(jobs), new_jobs=len(jobs))
    new = new_batch(
        project_id=old.project_id,
        user_id=user_id,
        parent_id=old.id,
        open=False,
        device_type=old.device_type,
        queue_priority=old.queue_priority,
        sequence_builder=old.sequence_builder,
        backend_configuration=old.backend_configuration,
        configuration=old.configuration,
        webhook=old.webhook,
    )
    rows = []
    for order, job in enumerate(jobs):
        row = job_row(new, order, job.runs, job.variables, job.sequence, parent_id=job.id)
        row.update(atoms=job.atoms, duration_ns=job.duration_ns)
        rows.append(row)
    persist(session, new, rows, list(old.tags or []))
    return new


def replace_tags(session: Session, user_id: str, batch_id: str, tags: list[Any]) -> Batch:
    if not all(isinstance(t, str) for t in tags):
        raise InvalidRequestError.single("body", "tags must be a JSON array of strings")
    batch = _lock_batch(session, user_id, batch_id)
    set_tags(session, batch, tags)
    batch.updated_at = utcnow()
    return batch
