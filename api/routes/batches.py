"""Batches: create, read, list, add jobs, close, cancel, rebatch, tags, status."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Body, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from api.deps import ServicesDep, UserDep
from api.envelope import paged, success
from api.params import BatchFiltersDep, BatchJobFiltersDep, PageDep
from api.schemas import BatchCancellation, BatchOut, BatchStatusOut, JobCancellation, doc
from api.serializers import batch_dict, job_dict
from core.errors import AtomfleetError
from scheduler import listing, operations, queries
from scheduler.intake import Caller
from scheduler.listing import Direction
from scheduler.state import jobs_count_per_status
from scheduler.submissions import CreateBatchRequest, JobIn

router = APIRouter(tags=["batches"])


def _caller(request: Request, user_id: str) -> Caller:
    return Caller(user_id=user_id, user_agent=request.headers.get("user-agent", ""))


@router.post("/api/v1/batches", summary="Create Batch", responses=doc(BatchOut))
def create_batch(
    body: CreateBatchRequest, request: Request, svc: ServicesDep, user_id: UserDep
) -> Response:
    """Create a batch of jobs; returns it with its jobs, in creation order, status PENDING.

    The authenticated user must be a member of the target project. The request body may be
    gzip-compressed (`Content-Encoding: gzip`).
    """
    with svc.sessions.begin() as session:
        submission = svc.intake.create_batch(session, body, _caller(request, user_id))
        data = batch_dict(submission.batch)
        data["jobs"] = [job_dict(row) for row in submission.jobs]
    svc.wake_dispatcher()
    return success(data)


@router.get("/api/v1/batches", summary="Get All Batches", responses=doc(list[BatchOut], paged=True))
def list_batches(
    filters: BatchFiltersDep, page: PageDep, svc: ServicesDep, user_id: UserDep
) -> Response:
    """The caller's batches (every project they belong to), newest first, without jobs."""
    with svc.sessions() as session:
        result = listing.list_batches(
            session,
            user_id,
            filters,
            order_by=page.order_by or "created_at",
            direction=page.direction or Direction.DESC,
            offset=page.offset,
            limit=page.limit,
        )
        data = [batch_dict(b, sequence_builder=False) for b in result.items]
    return paged(data, result.total, result.offset, result.end)


@router.get("/api/v2/batches/{batch_id}", summary="Get Batch", responses=doc(BatchOut))
def get_batch(batch_id: str, svc: ServicesDep, user_id: UserDep) -> Response:
    """A batch with its `sequence_builder` and the ids of its jobs (no inline jobs)."""
    with svc.sessions() as session:
        batch = queries.get_batch(session, user_id, batch_id)
        data = batch_dict(batch)
        data["job_ids"] = [job.id for job in queries.jobs_of_batch(session, batch.id)]
    return success(data)


@router.get(
    "/api/v1/batches/{batch_id}/status", summary="Get Batch Status", responses=doc(BatchStatusOut)
)
def batch_status(batch_id: str, svc: ServicesDep, user_id: UserDep) -> Response:
    """The batch's status and its number of jobs per status."""
    with svc.sessions() as session:
        batch = queries.get_batch(session, user_id, batch_id)
        return success(
            {"status": batch.status.value, "jobs_count_per_status": jobs_count_per_status(batch)}
        )


def _with_jobs(session: Any, batch: Any) -> dict[str, Any]:
    data = batch_dict(batch)
    data["jobs"] = [job_dict(job) for job in queries.jobs_of_batch(session, batch.id)]
    return data


@router.post(
    "/api/v2/batches/{batch_id}/jobs", summary="Add Jobs To Batch", responses=doc(BatchOut)
)
def add_jobs(
    batch_id: str,
    jobs: Annotated[list[JobIn], Body(description="The jobs to add (a JSON array).")],
    request: Request,
    svc: ServicesDep,
    user_id: UserDep,
) -> Response:
    """Add jobs to an open batch; returns the batch with all its jobs in creation order.

    A job sent with an explicit `"sequence": null` and the runs and variables of a job of
    the batch is a retry of it (what `batch.retry(job)` sends): its `parent_id` is that job.
    409 when the batch is closed.
    """
    retries = ["sequence" in job.model_fields_set and job.sequence is None for job in jobs]
    with svc.sessions.begin() as session:
        batch = operations.add_jobs(
            session, svc.intake, _caller(request, user_id), batch_id, jobs, retries
        )
        data = _with_jobs(session, batch)
    svc.wake_dispatcher()
    return success(data)


@router.patch("/api/v2/batches/{batch_id}/complete", summary="Close Batch", responses=doc(BatchOut))
def close_batch(batch_id: str, svc: ServicesDep, user_id: UserDep) -> Response:
    """Close an open batch: it accepts no more jobs and ends when its jobs have."""
    with svc.sessions.begin() as session:
        batch = operations.close(session, user_id, batch_id)
        data = batch_dict(batch)
    return success(data)


@router.patch("/api/v2/batches/{batch_id}/cancel", summary="Cancel Batch", responses=doc(BatchOut))
def cancel_batch(batch_id: str, svc: ServicesDep, user_id: UserDep) -> Response:
    """Cancel the batch and its PENDING and RUNNING jobs (409 once it has ended)."""
    with svc.sessions.begin() as session:
        batch, canceled = operations.cancel_batch(session, user_id, batch_id)
        data = batch_dict(batch)
    svc.flag_canceled(canceled)
    return success(data)


class CancelBatches(BaseModel):
    batch_ids: list[UUID] = Field(description="The batches to cancel.")


@router.patch("/api/v1/batches/cancel", summary="Cancel Batches", responses=doc(BatchCancellation))
def cancel_batches(body: CancelBatches, svc: ServicesDep, user_id: UserDep) -> Response:
    """Cancel several batches: `{"batches": [...], "errors": {batch_id: reason}}`."""
    batches, errors = [], {}
    for batch_id in dict.fromkeys(str(b) for b in body.batch_ids):
        try:
            with svc.sessions.begin() as session:
                batch, canceled = operations.cancel_batch(session, user_id, batch_id)
                batches.append(batch_dict(batch))
            svc.flag_canceled(canceled)
        except AtomfleetError as exc:
            errors[batch_id] = str(exc)
    return success({"batches": batches, "errors": errors})


@router.patch(
    "/api/v2/batches/{batch_id}/cancel/jobs",
    summary="Cancel Jobs Of Batch",
    responses=doc(JobCancellation),
)
def cancel_jobs(
    batch_id: str, filters: BatchJobFiltersDep, svc: ServicesDep, user_id: UserDep
) -> Response:
    """Cancel the batch's jobs matching the filters: `{"jobs": [...], "errors": {id: reason}}`."""
    with svc.sessions.begin() as session:
        jobs, errors, canceled = operations.cancel_jobs(session, user_id, batch_id, filters)
        data = {"jobs": [job_dict(job) for job in jobs], "errors": errors}
    svc.flag_canceled(canceled)
    return success(data)


@router.post("/api/v1/batches/{batch_id}/rebatch", summary="Rebatch", responses=doc(BatchOut))
def rebatch(
    batch_id: str, filters: BatchJobFiltersDep, svc: ServicesDep, user_id: UserDep
) -> Response:
    """A new batch (with `parent_id`) running again the jobs that match the filters."""
    with svc.sessions.begin() as session:
        batch = operations.rebatch(session, user_id, batch_id, filters)
        data = _with_jobs(session, batch)
    svc.wake_dispatcher()
    return success(data)


@router.patch("/api/v1/batches/{batch_id}/tags", summary="Set Batch Tags", responses=doc(BatchOut))
def set_tags(
    batch_id: str,
    tags: Annotated[list[str], Body(description="The new tags (a JSON array).")],
    svc: ServicesDep,
    user_id: UserDep,
) -> Response:
    """Replace the batch's tags."""
    with svc.sessions.begin() as session:
        batch = operations.replace_tags(session, user_id, batch_id, tags)
        data = batch_dict(batch)
    return success(data)
