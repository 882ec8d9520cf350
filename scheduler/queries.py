"""Reads for the API, always scoped to the projects the caller belongs to."""

from __future__ import annotations

import functools
import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.enums import ACTIVE_JOB_STATUSES
from core.errors import InvalidRequestError, NotFoundError
from scheduler.accounts import is_member
from scheduler.models import Batch, Job, Result, WebhookDelivery
from scheduler.sequences import build_serialized


def is_id(value: str) -> bool:
    """Whether `value` is shaped like our ids (UUIDs); nothing else can be found."""
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


def get_batch(session: Session, user_id: str, batch_id: str) -> Batch:
    batch = session.get(Batch, batch_id) if is_id(batch_id) else None
    if batch is None or not is_member(session, user_id, batch.project_id):
        raise NotFoundError("batch", batch_id)
    return batch


def get_job(session: Session, user_id: str, job_id: str) -> Job:
    job = session.get(Job, job_id) if is_id(job_id) else None
    if job is None or not is_member(session, user_id, job.project_id):
        raise NotFoundError("job", job_id)
    return job


def job_ids_of_batch(session: Session, batch_id: str) -> list[str]:
    """The batch's job ids in creation order, read without building ORM objects."""
    return list(
        session.scalars(select(Job.id).where(Job.batch_id == batch_id).order_by(Job.creation_order))
    )


def active_job_ids(session: Session, batch_id: str) -> list[str]:
    return list(
        session.scalars(
            select(Job.id).where(Job.batch_id == batch_id, Job.status.in_(ACTIVE_JOB_STATUSES))
        )
    )


def jobs_of_batch(session: Session, batch_id: str) -> list[Job]:
    return list(
        session.scalars(select(Job).where(Job.batch_id == batch_id).order_by(Job.creation_order))
    )


def deliveries_of(session: Session, batch_id: str) -> list[WebhookDelivery]:
    return list(
        session.scalars(
            select(WebhookDelivery)
            .where(WebhookDelivery.batch_id == batch_id)
            .order_by(WebhookDelivery.created_at)
        )
    )


def get_result(session: Session, job_id: str) -> Result | None:
    return session.get(Result, job_id) if is_id(job_id) else None


def job_sequence(job: Job, batch: Batch) -> str | None:
    """The built sequence the job runs: its own, or the batch builder with its variables;
    None for a job of a large batch that cannot be built (it ends ERROR, saying why), and
    once the results retention purged the job (its own sequence is gone)."""
    if job.results_purged_at is not None:
        return None
    if job.sequence is not None:
        return job.sequence
    if batch.sequence_builder is None:
        return None
    try:
        return _built(batch.sequence_builder, _freeze(job.variables))
    except InvalidRequestError:
        return None


@functools.lru_cache(maxsize=256)
def _built(builder: str, variables: tuple[tuple[str, object], ...]) -> str:
    return build_serialized(builder, {k: _thaw(v) for k, v in variables})


def _freeze(values: dict[str, object] | None) -> tuple[tuple[str, object], ...]:
    return tuple(
        sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in (values or {}).items())
    )


def _thaw(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value
