"""Query parameters shared by the list and bulk endpoints (repeated keys for lists).

Every constraint is in the parameter's type, so the OpenAPI document says exactly what is
accepted: ids are UUIDs, other strings hold no NUL character, counts fit the store's
32-bit integers, dates are ISO 8601 (without a zone: UTC).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import Depends, Path, Query
from pydantic import BeforeValidator, StringConstraints

from core.enums import BatchStatus, DeviceType, JobOrigin, JobStatus, QueuePriority
from scheduler.listing import MAX_LIMIT, BatchFilters, Direction, JobFilters
from scheduler.submissions import NO_NUL

INT32 = 2**31 - 1  # counts are 32-bit integers in the store
UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"


def _iso(value: Any) -> Any:
    """ISO 8601 only (no Unix timestamps); without a zone, UTC."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError("expected an ISO 8601 date and time") from None
    else:
        raise ValueError("expected an ISO 8601 date and time")
    try:
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ValueError("out of the range of dates") from None


Id = Annotated[str, StringConstraints(pattern=UUID_PATTERN)]
Text = Annotated[str, StringConstraints(pattern=NO_NUL, max_length=200)]
When = Annotated[datetime, BeforeValidator(_iso)]
BatchId = Annotated[str, Path(pattern=UUID_PATTERN, description="The batch's id.")]
JobId = Annotated[str, Path(pattern=UUID_PATTERN, description="The job's id.")]


def batch_filters(
    id: Annotated[list[Id] | None, Query(description="Unique id for the batch")] = None,
    id_prefix: Annotated[
        list[Text] | None, Query(description="First characters of the batch id")
    ] = None,
    project_id: Annotated[list[Id] | None, Query(description="Owner project of the batch")] = None,
    user_id: Annotated[list[Text] | None, Query(description="Owner user of the batch")] = None,
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
        When | None, Query(description="Batches created at or after this time")
    ] = None,
    end_date: Annotated[
        When | None, Query(description="Batches created at or before this time")
    ] = None,
    queue_priority: Annotated[
        list[QueuePriority] | None, Query(description="Priority of the batch in the queue.")
    ] = None,
    tag: Annotated[list[Text] | None, Query(description="Tag used to identify the batch")] = None,
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
        start_date=start_date,
        end_date=end_date,
        tag=tag or [],
    )


def job_filters(
    id: Annotated[list[Id] | None, Query(description="Unique id for the job")] = None,
    id_prefix: Annotated[
        list[Text] | None, Query(description="First characters of the job id")
    ] = None,
    batch_id: Annotated[list[Id] | None, Query(description="Owner batch of the job")] = None,
    project_id: Annotated[list[Id] | None, Query(description="Owner project of the job")] = None,
    user_id: Annotated[list[Text] | None, Query(description="Owner user of the job")] = None,
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
        When | None, Query(description="Jobs created at or after this time")
    ] = None,
    end_date: Annotated[
        When | None, Query(description="Jobs created at or before this time")
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
        start_date=start_date,
        end_date=end_date,
    )


def batch_job_filters(
    id: Annotated[list[Id] | None, Query(description="Job ids")] = None,
    status: Annotated[list[JobStatus] | None, Query(description="Job statuses")] = None,
    min_runs: Annotated[
        int | None, Query(ge=0, le=INT32, description="Minimum number of runs")
    ] = None,
    max_runs: Annotated[
        int | None, Query(ge=0, le=INT32, description="Maximum number of runs")
    ] = None,
    start_date: Annotated[
        When | None, Query(description="Jobs created at or after this time")
    ] = None,
    end_date: Annotated[
        When | None, Query(description="Jobs created at or before this time")
    ] = None,
) -> JobFilters:
    """The filters of rebatch and of cancelling a batch's jobs (within one batch)."""
    return JobFilters(
        id=id or [],
        status=status or [],
        min_runs=min_runs,
        max_runs=max_runs,
        start_date=start_date,
        end_date=end_date,
    )


DirectionParam = Literal["ASC", "DESC", "asc", "desc"]


class Page:
    def __init__(self, order_by: str | None, direction: str | None, offset: int, limit: int):
        self.order_by = order_by
        self.direction = Direction(direction.upper()) if direction else None
        self.offset = offset
        self.limit = limit


def batch_page(
    offset: Annotated[int, Query(ge=0, le=INT32)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = MAX_LIMIT,
    order_by: Annotated[
        Literal[
            "created_at",
            "updated_at",
            "start_datetime",
            "end_datetime",
            "status",
            "jobs_count",
            "device_type",
        ]
        | None,
        Query(description="Field to order by (default created_at)"),
    ] = None,
    order_by_direction: Annotated[
        DirectionParam | None, Query(description="ASC or DESC (default DESC)")
    ] = None,
) -> Page:
    return Page(order_by, order_by_direction, offset, limit)


def job_page(
    offset: Annotated[int, Query(ge=0, le=INT32)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = MAX_LIMIT,
    order_by: Annotated[
        Literal[
            "created_at",
            "updated_at",
            "creation_order",
            "start_timestamp",
            "end_timestamp",
            "status",
            "runs",
        ]
        | None,
        Query(description="Field to order by (default created_at; creation_order within a batch)"),
    ] = None,
    order_by_direction: Annotated[
        DirectionParam | None, Query(description="ASC or DESC (default DESC)")
    ] = None,
) -> Page:
    return Page(order_by, order_by_direction, offset, limit)


BatchFiltersDep = Annotated[BatchFilters, Depends(batch_filters)]
JobFiltersDep = Annotated[JobFilters, Depends(job_filters)]
BatchPageDep = Annotated[Page, Depends(batch_page)]
JobPageDep = Annotated[Page, Depends(job_page)]
BatchJobFiltersDep = Annotated[JobFilters, Depends(batch_job_filters)]
