"""Jobs: list, get (with the built sequence), status, cancel, results link and download."""

from __future__ import annotations

import time
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from api import signing
from api.deps import ServicesDep, UserDep
from api.envelope import paged, raw, success
from api.params import JobFiltersDep, JobId, JobPageDep
from api.schemas import ErrorEnvelope, JobOut, JobStatusOut, ResultOut, ResultsLinkOut, doc
from core.errors import NotFoundError
from scheduler import listing, operations, queries
from scheduler.listing import Direction
from scheduler.models import Job
from scheduler.retention import purged_result
from scheduler.wire import job_dict, with_estimates

router = APIRouter(tags=["jobs"])


@router.get("/api/v2/jobs", summary="Get Jobs", responses=doc(list[JobOut], paged=True))
def list_jobs(
    user_id: UserDep, filters: JobFiltersDep, page: JobPageDep, svc: ServicesDep
) -> Response:
    """The caller's jobs, newest first, without results; `batch_id` with
    `order_by=creation_order&order_by_direction=ASC` gives a batch's jobs in order."""
    with svc.sessions() as session:
        result = listing.list_jobs(
            session,
            user_id,
            filters,
            order_by=page.order_by or "created_at",
            direction=page.direction or Direction.DESC,
            offset=page.offset,
            limit=page.limit,
        )
        estimates = svc.estimator.estimate(session, result.items)
        data = [with_estimates(job_dict(job), estimates.get(job.id)) for job in result.items]
    return paged(data, result.total, result.offset, result.end)


@router.get("/api/v2/jobs/{job_id}", summary="Get Job", responses=doc(JobOut, errors=(401, 404)))
def get_job(user_id: UserDep, job_id: JobId, svc: ServicesDep) -> Response:
    """A job, with `sequence`: the built Pulser sequence it runs."""
    with svc.sessions() as session:
        job = queries.get_job(session, user_id, job_id)
        batch = queries.get_batch(session, user_id, job.batch_id)
        data = with_estimates(job_dict(job), svc.estimator.estimate(session, [job]).get(job.id))
        data["sequence"] = queries.job_sequence(job, batch)
    return success(data)


@router.get(
    "/api/v1/jobs/{job_id}/status",
    summary="Get Job Status",
    responses=doc(JobStatusOut, errors=(401, 404)),
)
def job_status(user_id: UserDep, job_id: JobId, svc: ServicesDep) -> Response:
    with svc.sessions() as session:
        return success({"status": queries.get_job(session, user_id, job_id).status.value})


@router.patch(
    "/api/v2/jobs/{job_id}/cancel",
    summary="Cancel Job",
    responses=doc(JobOut, errors=(401, 404, 409)),
)
def cancel_job(user_id: UserDep, job_id: JobId, svc: ServicesDep) -> Response:
    """Cancel a PENDING or RUNNING job (409 once it has ended).

    A canceled job never starts; a running one is stopped (its emulation interrupted, its QPU
    job canceled) and ends with no result.
    """
    with svc.sessions.begin() as session:
        data = job_dict(operations.cancel_job(session, user_id, job_id))
    return success(data)


@router.get(
    "/api/v1/jobs/{job_id}/results_link",
    summary="Get Job Results Link",
    responses=doc(ResultsLinkOut, errors=(401, 404, 410)),
)
def results_link(user_id: UserDep, job_id: JobId, request: Request, svc: ServicesDep) -> Response:
    """A pre-signed, expiring URL to download the job's result; null until it exists; 410
    once the results retention deleted it."""
    with svc.sessions() as session:
        job = queries.get_job(session, user_id, job_id)
        gone = purged_result(job, svc.settings.results_retention_days)
        if gone is not None:
            raise gone
        has_result = queries.get_result(session, job.id) is not None
    if not has_result:
        return success({"results_link": None})
    expires = int(time.time()) + svc.settings.results_link_ttl_s
    signature = signing.sign(svc.secret_keys[0], job_id, expires)
    query = urlencode({"expires": expires, "signature": signature})
    base = svc.settings.public_url.rstrip("/") or str(request.base_url).rstrip("/")
    return success({"results_link": f"{base}/api/v1/results/{job_id}?{query}"})


@router.get(
    "/api/v1/results/{job_id}",
    summary="Download Job Result",
    responses={
        200: {"model": ResultOut},
        404: {"model": ErrorEnvelope},
        410: {"model": ErrorEnvelope},
    },
)
def download_result(
    job_id: JobId,
    expires: Annotated[int, Query(ge=0, le=2**62)],
    signature: Annotated[str, Query(max_length=128, pattern="^[0-9a-f]*$")],
    svc: ServicesDep,
) -> Response:
    """The result as a bare JSON object `{counter, serialised_results}`; no auth, signed URL;
    410 once the results retention deleted it (a link handed out before)."""
    if not signing.verify(svc.secret_keys, job_id, expires, signature):
        raise NotFoundError("result", job_id)
    with svc.sessions() as session:
        result = queries.get_result(session, job_id)
        if result is None:
            job = session.get(Job, job_id)
            gone = purged_result(job, svc.settings.results_retention_days) if job else None
            raise gone or NotFoundError("result", job_id)
        return raw({"counter": result.counter, "serialised_results": result.serialised_results})
