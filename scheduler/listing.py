"""Filtered, ordered, paginated lists of batches and jobs, scoped to the caller's projects."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any, Generic, TypeVar, cast

from sqlalchemy import ColumnElement, Select, Table, func, or_, select, union_all
from sqlalchemy.orm import InstrumentedAttribute, Session

from core.enums import BatchStatus, DeviceType, JobOrigin, JobStatus, QueuePriority
from core.errors import InvalidRequestError
from scheduler.accounts import project_ids_of
from scheduler.models import Batch, BatchTag, Job, JobCount

MAX_LIMIT = 100
T = TypeVar("T")


class Direction(StrEnum):
    ASC = "ASC"
    DESC = "DESC"


@dataclass
class Page(Generic[T]):
    items: list[T]
    total: int
    offset: int

    @property
    def end(self) -> int:
        # `end` always advances: a client paging on it can never loop.
        return self.offset + len(self.items) if self.items else max(self.offset, self.total)


@dataclass
class BatchFilters:
    id: list[str] = field(default_factory=list)
    id_prefix: list[str] = field(default_factory=list)
    project_id: list[str] = field(default_factory=list)
    user_id: list[str] = field(default_factory=list)
    device_type: list[DeviceType] = field(default_factory=list)
    status: list[BatchStatus] = field(default_factory=list)
    queue_priority: list[QueuePriority] = field(default_factory=list)
    open: bool | None = None
    min_jobs: int | None = None
    max_jobs: int | None = None
    start_date: datetime | None = None
    end_date: datetime | None = None
    tag: list[str] = field(default_factory=list)


@dataclass
class JobFilters:
    id: list[str] = field(default_factory=list)
    id_prefix: list[str] = field(default_factory=list)
    batch_id: list[str] = field(default_factory=list)
    project_id: list[str] = field(default_factory=list)
    user_id: list[str] = field(default_factory=list)
    status: list[JobStatus] = field(default_factory=list)
    origin: list[JobOrigin] = field(default_factory=list)
    min_runs: int | None = None
    max_runs: int | None = None
    errors: bool | None = None
    start_date: datetime | None = None
    end_date: datetime | None = None


BATCH_ORDER: dict[str, InstrumentedAttribute[Any]] = {
    "created_at": Batch.created_at,
    "updated_at": Batch.updated_at,
    "start_datetime": Batch.start_datetime,
    "end_datetime": Batch.end_datetime,
    "status": Batch.status,
    "jobs_count": Batch.jobs_count,
    "device_type": Batch.device_type,
}
JOB_ORDER: dict[str, InstrumentedAttribute[Any]] = {
    "created_at": Job.created_at,
    "updated_at": Job.updated_at,
    "creation_order": Job.creation_order,
    "start_timestamp": Job.start_timestamp,
    "end_timestamp": Job.end_timestamp,
    "status": Job.status,
    "runs": Job.runs,
}


def _in(column: InstrumentedAttribute[Any], values: list[Any]) -> list[ColumnElement[bool]]:
    return [column.in_(values)] if values else []


def _prefixes(column: InstrumentedAttribute[Any], prefixes: list[str]) -> list[ColumnElement[bool]]:
    if not prefixes:
        return []
    return [or_(*(column.startswith(p.lower(), autoescape=True) for p in prefixes))]


def batch_conditions(f: BatchFilters) -> list[ColumnElement[bool]]:
    where = [
        *_in(Batch.id, f.id),
        *_prefixes(Batch.id, f.id_prefix),
        *_in(Batch.project_id, f.project_id),
        *_in(Batch.user_id, f.user_id),
        *_in(Batch.device_type, f.device_type),
        *_in(Batch.status, f.status),
        *_in(Batch.queue_priority, f.queue_priority),
    ]
    if f.tag:
        where.append(Batch.id.in_(select(BatchTag.batch_id).where(BatchTag.tag.in_(f.tag))))
    if f.open is not None:
        where.append(Batch.open.is_(f.open))
    if f.min_jobs is not None:
        where.append(Batch.jobs_count >= f.min_jobs)
    if f.max_jobs is not None:
        where.append(Batch.jobs_count <= f.max_jobs)
    if f.start_date is not None:
        where.append(Batch.created_at >= f.start_date)
    if f.end_date is not None:
        where.append(Batch.created_at <= f.end_date)
    return where


def job_conditions(f: JobFilters) -> list[ColumnElement[bool]]:
    where = [
        *_in(Job.id, f.id),
        *_prefixes(Job.id, f.id_prefix),
        *_in(Job.batch_id, f.batch_id),
        *_in(Job.project_id, f.project_id),
        *_in(Job.user_id, f.user_id),
        *_in(Job.status, f.status),
        *_in(Job.origin, f.origin),
    ]
    if f.min_runs is not None:
        where.append(Job.runs >= f.min_runs)
    if f.max_runs is not None:
        where.append(Job.runs <= f.max_runs)
    if f.errors is not None:
        # A job has errors exactly when it ended in ERROR; the status index serves this.
        where.append(Job.status == JobStatus.ERROR if f.errors else Job.status != JobStatus.ERROR)
    if f.start_date is not None:
        where.append(Job.created_at >= f.start_date)
    if f.end_date is not None:
        where.append(Job.created_at <= f.end_date)
    return where


def _check_window(offset: int, limit: int) -> None:
    if offset < 0:
        raise InvalidRequestError.single("offset", "must be 0 or more")
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidRequestError.single("limit", f"must be between 1 and {MAX_LIMIT}")


def list_batches(
    session: Session,
    user_id: str,
    filters: BatchFilters,
    *,
    order_by: str = "created_at",
    direction: Direction = Direction.DESC,
    offset: int = 0,
    limit: int = MAX_LIMIT,
) -> Page[Batch]:
    if order_by not in BATCH_ORDER:
        raise InvalidRequestError.single("order_by", f"one of {', '.join(BATCH_ORDER)}")
    _check_window(offset, limit)
    projects = sorted(project_ids_of(session, user_id))
    if filters.project_id:
        projects = [p for p in projects if p in filters.project_id]
    where = batch_conditions(replace(filters, project_id=[]))
    count = select(func.count()).select_from(Batch).where(Batch.project_id.in_(projects), *where)
    total = session.scalar(count) or 0
    scopes = [Batch.project_id == p for p in projects]
    if filters.id and projects:  # a few batches at most: one query sorts them
        scopes = [Batch.project_id.in_(projects)]
    order = [BATCH_ORDER[order_by].key, "id"]
    items = _merged_page(session, Batch, scopes, where, order, direction, offset, limit)
    return Page(items, total, offset)


def list_jobs(
    session: Session,
    user_id: str,
    filters: JobFilters,
    *,
    order_by: str = "created_at",
    direction: Direction = Direction.DESC,
    offset: int = 0,
    limit: int = MAX_LIMIT,
) -> Page[Job]:
    if order_by not in JOB_ORDER:
        raise InvalidRequestError.single("order_by", f"one of {', '.join(JOB_ORDER)}")
    _check_window(offset, limit)
    projects = project_ids_of(session, user_id)
    total = maintained_job_total(session, projects, filters)
    if filters.project_id:
        projects = [p for p in projects if p in filters.project_id]
    scopes, anywhere, where = _job_scopes(session, sorted(projects), filters)
    if total is None:
        total = _counted_total(session, projects, filters, anywhere, where)
    # (batch_id, creation_order) is unique: with it every order is total, so pages never
    # repeat or skip a job, and the default order is one index walk per project.
    if order_by == "creation_order":
        order = ["creation_order", "batch_id"]
    else:
        order = [JOB_ORDER[order_by].key, "batch_id", "creation_order"]
    items = _merged_page(session, Job, scopes, where, order, direction, offset, limit)
    return Page(items, total, offset)


def _job_scopes(
    session: Session, projects: list[str], filters: JobFilters
) -> tuple[list[ColumnElement[bool]], ColumnElement[bool], list[ColumnElement[bool]]]:
    """Where the jobs may be: one condition per part of the list (each read in list
    order through an index) and all of them in one; then what else they must match.

    The parts are the caller's projects (narrowed by `project_id`), or, with `batch_id`,
    the batches asked for in those projects (a job is in its batch's project): a batch's
    jobs are read through (batch_id, creation_order), whatever their age. Jobs asked for
    by id are found by id, in one part.
    """
    others = job_conditions(replace(filters, project_id=[], batch_id=[]))
    if not filters.batch_id:
        anywhere = Job.project_id.in_(projects)
        if filters.id:  # a few jobs at most: one query sorts them
            return ([anywhere] if projects else []), anywhere, others
        return [Job.project_id == p for p in projects], anywhere, others
    batches = list(
        session.scalars(
            select(Batch.id).where(Batch.id.in_(filters.batch_id), Batch.project_id.in_(projects))
        )
    )
    anywhere = Job.batch_id.in_(batches)
    return ([anywhere] if batches else []), anywhere, others


def _merged_page(
    session: Session,
    entity: type[Batch] | type[Job],
    scopes: list[ColumnElement[bool]],
    where: list[ColumnElement[bool]],
    order: list[str],
    direction: Direction,
    offset: int,
    limit: int,
) -> list[Any]:
    """One page of the rows in `scopes` matching `where`, ordered by the columns `order`.

    Lists are ordered within a project by the indexes (project_id, ..., created_at, ...),
    so the page is merged from one ordered query per scope: a single query over several
    projects would sort all their matches, or walk every project's rows in a global order.
    The merge carries only the rows' ids and order keys; the page's rows are then read by
    id, in the same statement.
    """
    table = cast(Table, entity.__table__)
    names = list(dict.fromkeys(["id", *order]))

    def ordering(columns: Any) -> list[ColumnElement[Any]]:
        keys = [columns[name] for name in order]
        return [c.asc() if direction == Direction.ASC else c.desc() for c in keys]

    def of_scope(scope: ColumnElement[bool]) -> Select[Any]:
        keys = select(*(table.c[name] for name in names)).where(scope, *where)
        return keys.order_by(*ordering(table.c))

    if not scopes:
        return []
    parts = [select(of_scope(s).limit(offset + limit).subquery()) for s in scopes]
    merged = (parts[0] if len(parts) == 1 else union_all(*parts)).subquery()
    keys = select(merged).order_by(*ordering(merged.c)).offset(offset).limit(limit).subquery()
    page = select(entity).join(keys, entity.id == keys.c.id).order_by(*ordering(keys.c))
    return list(session.scalars(page))


# Filters whose total the store maintains (job_counts and the batches' counters).
_COUNTED = frozenset({"project_id", "user_id", "status", "errors"})
_BATCH_COUNTED = frozenset({"batch_id", "status", "errors"})


def maintained_job_total(session: Session, projects: list[str], filters: JobFilters) -> int | None:
    """The number of jobs matching `filters` from maintained counts, or None when the
    filters are not ones the store counts (the page then counts its matches)."""
    used = {name for name, value in vars(filters).items() if value not in (None, [])}
    statuses = _statuses(filters)
    if used <= _COUNTED:
        wanted = [p for p in projects if not filters.project_id or p in filters.project_id]
        if not wanted:
            return 0
        query = select(func.coalesce(func.sum(JobCount.n), 0)).where(
            JobCount.project_id.in_(wanted), JobCount.status.in_(statuses)
        )
        if filters.user_id:
            query = query.where(JobCount.user_id.in_(filters.user_id))
        return int(session.scalar(query) or 0)
    if used <= _BATCH_COUNTED and filters.batch_id:
        rows = session.scalars(
            select(Batch).where(Batch.id.in_(filters.batch_id), Batch.project_id.in_(projects))
        )
        return sum(batch.counts()[s] for batch in rows for s in statuses)
    return None


# Filters on what never changes once a job is written (its status does change).
_IMMUTABLE = frozenset({"id", "id_prefix", "batch_id", "project_id", "user_id", "origin",
                        "min_runs", "max_runs", "start_date", "end_date"})  # fmt: skip


class _Totals:
    """A bounded LRU of counted totals, each kept with the number of jobs its projects held
    when it was counted."""

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self._found: OrderedDict[tuple[Any, ...], tuple[int, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...], jobs: int) -> int | None:
        with self._lock:
            found = self._found.get(key)
            if found is None or found[0] != jobs:
                return None
            self._found.move_to_end(key)
            return found[1]

    def put(self, key: tuple[Any, ...], jobs: int, total: int) -> None:
        with self._lock:
            self._found[key] = (jobs, total)
            self._found.move_to_end(key)
            while len(self._found) > self.size:
                self._found.popitem(last=False)


_TOTALS = _Totals()


def _counted_total(
    session: Session,
    projects: list[str],
    filters: JobFilters,
    anywhere: ColumnElement[bool],
    where: list[ColumnElement[bool]],
) -> int:
    """The number of matches, counted. When every filter is on what never changes, the
    matches change only when a job is added to the projects (jobs are never deleted), so
    the count is kept (per API process) with the projects' number of jobs, a maintained
    count, and reused until that number changes: a user paging through a list counts its
    matches once, not on every page."""
    used = {name: value for name, value in vars(filters).items() if value not in (None, [])}
    key, jobs = None, 0
    if used.keys() <= _IMMUTABLE:
        # a digest: the filters' lists (ids...) may be long, the cache's memory stays bounded
        described = repr((sorted(projects), sorted((k, repr(v)) for k, v in used.items())))
        key = (hashlib.sha256(described.encode()).digest(),)
        # read before the count: a job added meanwhile makes the next request count again
        jobs = int(
            session.scalar(
                select(func.coalesce(func.sum(JobCount.n), 0)).where(
                    JobCount.project_id.in_(projects)
                )
            )
            or 0
        )
        cached = _TOTALS.get(key, jobs)
        if cached is not None:
            return cached
    total = int(session.scalar(select(func.count()).select_from(Job).where(anywhere, *where)) or 0)
    if key is not None:
        _TOTALS.put(key, jobs, total)
    return total


def _statuses(filters: JobFilters) -> list[JobStatus]:
    statuses = set(filters.status or JobStatus)
    if filters.errors is True:
        statuses &= {JobStatus.ERROR}
    elif filters.errors is False:
        statuses -= {JobStatus.ERROR}
    return sorted(statuses)
