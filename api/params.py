"""Query parameters shared by the list and bulk endpoints (repeated keys for lists)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Query

from core.enums import BatchStatus, DeviceType, JobOrigin, JobStatus, QueuePriority
from core.errors import InvalidRequestError
from scheduler.listing import MAX_LIMIT, BatchFilters, Direction, JobFilters

INT32 = 2**31 - 1  # counts are 32-bit integers in the store


def batch_filters(
    id: Annotated[list[str] | None, Query(description="Unique id for the batch")] = None,
    id_prefix: Annotated[
        list[str] | None, Query(description="First characters of the batch id")
    ] = None,
    project_id: Annotated[list[str] | None, Query(description="Owner project of the batch")] = None,
    user_id: Annotated[list[str] | None, Query(description="Owner user of the batch")] = None,
    device_type: Annotated[list[DeviceType] | None, Query(description="Device type")] = None,
    status: Annotated[list[BatchStatus] | None, Query(description="Batch status")] = None,
    complete: Annotated[bool | None, Query(description="Deprecated. Use open instead.")] = None,
    open: Annotated[
        bool | None, Query(description="Filter by whether the batch is still open.")
    ] = None,
    min_jobs: Annotated[
        int | None, Query(ge=0, le=INT32, description="Minimum number of jobs in the batch")
    ] = None,
    max_jobs: Annotated[
        int | None, Query(ge=0, le=INT32, description="Maximum number of jobs in the batch")
    ] = None,
    start_date: Annotated[
        datetime | None, Query(description="Batches created at or after this time")
    ] = None,
    end_date: Annotated[
        datetime | None, Query(description="Batches created at or before this time")
    ] = None,
    queue_priority: Annotated[
        list[QueuePriority] | None, Query(description="Priority of the batch in the queue.")
    ] = None,
    tag: Annotated[list[str] | None, Query(description="Tag used to identify the batch")] = None,
) -> BatchFilters:
    if open is None and complete is not None:
        open = not complete
    return BatchFilters(
        id=id or [],
        id_prefix=id_prefix or [],
        project_id=project_id or [],
        user_id=user_id or [],
        device_type=device_type or [],
        status=status or [],
        queue_priority=queue_priority or [],
        open=open,
        min_jobs=min_jobs,
        max_jobs=max_jobs,
        start_date=utc(start_date, "start_date"),
        end_date=utc(end_date, "end_date"),
        tag=tag or [],
    )


def job_filters(
    id: Annotated[list[str] | None, Query(description="Unique id for the job")] = None,
    id_prefix: Annotated[
        list[str] | None, Query(description="First characters of the job id")
    ] = None,
    batch_id: Annotated[list[str] | None, Query(description="Owner batch of the job")] = None,
    project_id: Annotated[list[str] | None, Query(description="Owner project of the job")] = None,
    user_id: Annotated[list[str] | None, Query(description="Owner user of the job")] = None,
    status: Annotated[list[JobStatus] | None, Query(description="Job status")] = None,
    min_runs: Annotated[
        int | None, Query(ge=0, le=INT32, description="Minimum number of runs")
    ] = None,
    max_runs: Annotated[
        int | None, Query(ge=0, le=INT32, description="Maximum number of runs")
    ] = None,
    errors: Annotated[
        bool | None, Query(description="Whether errors were returned when executing the job")
    ] = None,
    origin: Annotated[list[JobOrigin] | None, Query(description="Origin of the job")] = None,
    start_date: Annotated[
        datetime | None, Query(description="Jobs created at or after this time")
    ] = None,
    end_date: Annotated[
        datetime | None, Query(description="Jobs created at or before this time")
    ] = None,
) -> JobFilters:
    return JobFilters(
        id=id or [],
        id_prefix=id_prefix or [],
        batch_id=batch_id or [],
        project_id=project_id or [],
        user_id=user_id or [],
        status=status or [],
        origin=origin or [],
        min_runs=min_runs,
        max_runs=max_runs,
        errors=errors,
        start_date=utc(start_date, "start_date"),
        end_date=utc(end_date, "end_date"),
    )


def batch_job_filters(
    id: Annotated[list[str] | None, Query(description="Job ids")] = None,
    status: Annotated[list[JobStatus] | None, Query(description="Job statuses")] = None,
    min_runs: Annotated[
        int | None, Query(ge=0, le=INT32, description="Minimum number of runs")
    ] = None,
    max_runs: Annotated[
        int | None, Query(ge=0, le=INT32, description="Maximum number of runs")
    ] = None,
    start_date: Annotated[
        datetime | None, Query(description="Jobs created at or after this time")
    ] = None,
    end_date: Annotated[
        datetime | None, Query(description="Jobs created at or before this time")
    ] = None,
) -> JobFilters:
    """The filters of rebatch and of cancelling a batch's jobs (within one batch)."""
    return JobFilters(
        id=id or [],
        status=status or [],
        min_runs=min_runs,
        max_runs=max_runs,
        start_date=utc(start_date, "start_date"),
        end_date=utc(end_date, "end_date"),
    )


def utc(value: datetime | None, name: str) -> datetime | None:
    """A filter's time in UTC; one without a zone is read as UTC."""
    if value is None:
        return None
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise InvalidRequestError.single(name, "out of the range of dates") from None


class PageParams:
    def __init__(
        self,
        offset: Annotated[int, Query(ge=0, le=INT32)] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = MAX_LIMIT,
        order_by: Annotated[str | None, Query(description="Field to order by")] = None,
        order_by_direction: Annotated[str | None, Query(description="ASC or DESC")] = None,
    ) -> None:
        self.offset = offset
        self.limit = limit
        self.order_by = order_by
        self.direction: Direction | None = None
        if order_by_direction is not None:
            try:
                self.direction = Direction(order_by_direction.upper())
            except ValueError:
                raise InvalidRequestError.single("order_by_direction", "ASC or DESC") from None


BatchFiltersDep = Annotated[BatchFilters, Depends(batch_filters)]
JobFiltersDep = Annotated[JobFilters, Depends(job_filters)]
PageDep = Annotated[PageParams, Depends(PageParams)]
BatchJobFiltersDep = Annotated[JobFilters, Depends(batch_job_filters)]
