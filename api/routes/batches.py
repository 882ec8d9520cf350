"""Batches: create (v1) and get (v2)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from api.deps import ServicesDep, UserDep
from api.envelope import success
from api.serializers import batch_dict, job_dict
from scheduler import queries
from scheduler.intake import Caller
from scheduler.submissions import CreateBatchRequest

router = APIRouter(tags=["batches"])


@router.post("/api/v1/batches", summary="Create Batch")
def create_batch(
    body: CreateBatchRequest, request: Request, svc: ServicesDep, user_id: UserDep
) -> Response:
    """Create a batch of jobs; returns it with its jobs, in creation order, status PENDING.

    The authenticated user must be a member of the target project. The request body may be
    gzip-compressed (`Content-Encoding: gzip`).
    """
    caller = Caller(user_id=user_id, user_agent=request.headers.get("user-agent", ""))
    with svc.sessions.begin() as session:
        submission = svc.intake.create_batch(session, body, caller)
        data = batch_dict(submission.batch)
        data["jobs"] = [job_dict(row) for row in submission.jobs]
    svc.wake_dispatcher()
    return success(data)


@router.get("/api/v2/batches/{batch_id}", summary="Get Batch")
def get_batch(batch_id: str, svc: ServicesDep, user_id: UserDep) -> Response:
    """A batch with its `sequence_builder` and the ids of its jobs (no inline jobs)."""
    with svc.sessions() as session:
        batch = queries.get_batch(session, user_id, batch_id)
        data = batch_dict(batch)
        data["job_ids"] = [job.id for job in queries.jobs_of_batch(session, batch.id)]
    return success(data)
