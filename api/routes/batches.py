"""Batches: create, read, list, add jobs, close, cancel, rebatch, tags, status.

Create Batch and Add Jobs read their (capped) bodies themselves and do everything else,
JSON parsing and Pulser included, in a worker thread: a large submission never blocks
the event loop.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Body, Request
from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from api.deps import Services, ServicesDep, UserDep
from api.envelope import paged, success
from api.errors import validation_problems
from api.openapi import json_body
from api.params import BatchFiltersDep, BatchId, BatchJobFiltersDep, BatchPageDep
from api.schemas import (
    BatchCancellation,
    BatchOut,
    BatchStatusOut,
    JobCancellation,
    WebhookDeliveryOut,
    doc,
)
from api.sdk import sends_placeholder_runs
from core.errors import AtomfleetError, InvalidRequestError
from scheduler import listing, operations, queries
from scheduler.intake import Caller
from scheduler.listing import Direction
from scheduler.state import jobs_count_per_status
from scheduler.submissions import CreateBatchRequest, JobIn, TagList
from scheduler.wire import batch_dict, delivery_dict, job_dict

log = logging.getLogger(__name__)

router = APIRouter(tags=["batches"])
_JOBS = TypeAdapter(list[JobIn])


def _caller(request: Request, user_id: str) -> Caller:
    legacy = sends_placeholder_runs(request.headers.get("user-agent", ""))
    return Caller(user_id=user_id, sends_placeholder_runs=legacy)


@router.post(
    "/api/v1/batches",
    summary="Create Batch",
    responses=doc(BatchOut, errors=(401, 429)),
    openapi_extra=json_body(CreateBatchRequest, "The batch and its jobs (may be gzipped)."),
)
async def create_batch(user_id: UserDep, request: Request, svc: ServicesDep) -> Response:
    """Create a batch of jobs; returns it with its jobs, in creation order, status PENDING.

    The authenticated user must be a member of the target project. The request body may be
    gzip-compressed (`Content-Encoding: gzip`).
    """
    raw = await request.body()
    return await run_in_threadpool(_create_batch, svc, raw, _caller(request, user_id))


def _create_batch(svc: Services, raw: bytes, caller: Caller) -> Response:
    body = CreateBatchRequest.model_validate_json(raw or b"null")
    with svc.sessions.begin() as session:
        submission = svc.intake.create_batch(session, body, caller)
        data = batch_dict(submission.batch)
        data["jobs"] = [job_dict(row) for row in submission.jobs]
    return success(data)


@router.get("/api/v1/batches", summary="Get All Batches", responses=doc(list[BatchOut], paged=True))
def list_batches(
    user_id: UserDep, filters: BatchFiltersDep, page: BatchPageDep, svc: ServicesDep
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


@router.get(
    "/api/v2/batches/{batch_id}", summary="Get Batch", responses=doc(BatchOut, errors=(401, 404))
)
def get_batch(user_id: UserDep, batch_id: BatchId, svc: ServicesDep) -> Response:
    """A batch with its `sequence_builder` and the ids of its jobs (no inline jobs)."""
    with svc.sessions() as session:
        batch = queries.get_batch(session, user_id, batch_id)
        data = batch_dict(batch)
        data["job_ids"] = queries.job_ids_of_batch(session, batch.id)
    return success(data)


@router.get(
    "/api/v1/batches/{batch_id}/status",
    summary="Get Batch Status",
    responses=doc(BatchStatusOut, errors=(401, 404)),
)
def batch_status(user_id: UserDep, batch_id: BatchId, svc: ServicesDep) -> Response:
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
    "/api/v2/batches/{batch_id}/jobs",
    summary="Add Jobs To Batch",
    responses=doc(BatchOut, errors=(401, 404, 409, 429)),
    openapi_extra=json_body(list[JobIn], "The jobs to add (a JSON array; may be gzipped)."),
)
async def add_jobs(
    user_id: UserDep, batch_id: BatchId, request: Request, svc: ServicesDep
) -> Response:
    """Add jobs to an open batch; returns the batch with all its jobs in creation order.

    A job sent with an explicit `"sequence": null` and the runs and variables of a job of
    the batch is a retry of it (what `batch.retry(job)` sends): its `parent_id` is that job.
    409 when the batch is closed.
    """
    raw = await request.body()
    return await run_in_threadpool(_add_jobs, svc, batch_id, raw, _caller(request, user_id))


def _add_jobs(svc: Services, batch_id: str, raw: bytes, caller: Caller) -> Response:
    try:
        jobs = _JOBS.validate_json(raw or b"null")
    except ValidationError as exc:
        raise InvalidRequestError(validation_problems(exc, root=("jobs",))) from exc
    retries = ["sequence" in job.model_fields_set and job.sequence is None for job in jobs]
    with svc.sessions.begin() as session:
        batch = operations.add_jobs(session, svc.intake, caller, batch_id, jobs, retries)
        data = _with_jobs(session, batch)
    return success(data)


@router.patch(
    "/api/v2/batches/{batch_id}/complete",
    summary="Close Batch",
    responses=doc(BatchOut, errors=(401, 404)),
)
def close_batch(user_id: UserDep, batch_id: BatchId, svc: ServicesDep) -> Response:
    """Close an open batch: it accepts no more jobs and ends when its jobs have."""
    with svc.sessions.begin() as session:
        batch = operations.close(session, user_id, batch_id)
        data = batch_dict(batch)
    return success(data)


@router.patch(
    "/api/v2/batches/{batch_id}/cancel",
    summary="Cancel Batch",
    responses=doc(BatchOut, errors=(401, 404, 409)),
)
def cancel_batch(user_id: UserDep, batch_id: BatchId, svc: ServicesDep) -> Response:
    """Cancel the batch and its PENDING and RUNNING jobs (409 once it has ended)."""
    with svc.sessions.begin() as session:
        batch = operations.cancel_batch(session, user_id, batch_id)
        data = batch_dict(batch)
    return success(data)


class CancelBatches(BaseModel):
    batch_ids: list[UUID] = Field(max_length=1000, description="The batches to cancel.")


@router.patch("/api/v1/batches/cancel", summary="Cancel Batches", responses=doc(BatchCancellation))
def cancel_batches(user_id: UserDep, body: CancelBatches, svc: ServicesDep) -> Response:
    """Cancel several batches: `{"batches": [...], "errors": {batch_id: reason}}`.

    Each batch is canceled in its own transaction. Once one is, a store failure on another
    is reported in `errors` (never a 5xx after a write: clients retry those).
    """
    batches, errors = [], {}
    for batch_id in dict.fromkeys(str(b) for b in body.batch_ids):
        try:
            with svc.sessions.begin() as session:
                batches.append(batch_dict(operations.cancel_batch(session, user_id, batch_id)))
        except AtomfleetError as exc:
            errors[batch_id] = str(exc)
        except SQLAlchemyError:
            if not batches:
                raise  # nothing written yet: 503, and the client may retry
            log.exception("cancel of batch %s failed after others were canceled", batch_id)
            errors[batch_id] = "the store is unavailable; cancel it again"
    return success({"batches": batches, "errors": errors})


@router.patch(
    "/api/v2/batches/{batch_id}/cancel/jobs",
    summary="Cancel Jobs Of Batch",
    responses=doc(JobCancellation, errors=(401, 404)),
)
def cancel_jobs(
    user_id: UserDep, batch_id: BatchId, filters: BatchJobFiltersDep, svc: ServicesDep
) -> Response:
    """Cancel the batch's jobs matching the filters: `{"jobs": [...], "errors": {id: reason}}`."""
    with svc.sessions.begin() as session:
        jobs, errors = operations.cancel_jobs(session, user_id, batch_id, filters)
        data = {"jobs": [job_dict(job) for job in jobs], "errors": errors}
    return success(data)


@router.post(
    "/api/v1/batches/{batch_id}/rebatch",
    summary="Rebatch",
    responses=doc(BatchOut, errors=(401, 404, 410, 429)),
)
def rebatch(
    user_id: UserDep, batch_id: BatchId, filters: BatchJobFiltersDep, svc: ServicesDep
) -> Response:
    """A new batch (with `parent_id`) running again the jobs that match the filters."""
    with svc.sessions.begin() as session:
        batch = operations.rebatch(session, svc.intake, user_id, batch_id, filters)
        data = _with_jobs(session, batch)
    return success(data)


@router.get(
    "/api/v1/batches/{batch_id}/webhooks",
    summary="Batch Webhook Deliveries",
    responses=doc(list[WebhookDeliveryOut], errors=(401, 404)),
)
def webhook_deliveries(user_id: UserDep, batch_id: BatchId, svc: ServicesDep) -> Response:
    """The notifications of the batch's `webhook` (sent when it ends): attempts, status
    codes, the next retry."""
    with svc.sessions() as session:
        batch = queries.get_batch(session, user_id, batch_id)
        return success([delivery_dict(d) for d in queries.deliveries_of(session, batch.id)])


@router.patch(
    "/api/v1/batches/{batch_id}/tags",
    summary="Set Batch Tags",
    responses=doc(BatchOut, errors=(401, 404)),
)
def set_tags(
    user_id: UserDep,
    batch_id: BatchId,
    tags: Annotated[TagList, Body(description="The new tags (a JSON array).")],
    svc: ServicesDep,
) -> Response:
    """Replace the batch's tags."""
    with svc.sessions.begin() as session:
        batch = operations.replace_tags(session, user_id, batch_id, tags)
        data = batch_dict(batch)
    return success(data)
