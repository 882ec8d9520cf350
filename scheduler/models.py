"""SQLAlchemy models of the store, the source of truth for accounts, batches, jobs and results."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from core.enums import (
    BatchStatus,
    DeliveryStatus,
    DeviceType,
    JobOrigin,
    JobStatus,
    QueuePriority,
)


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every engine (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime")
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def _enum(cls: type[Any], name: str) -> Enum:
    # Stored as plain strings with a CHECK-free VARCHAR so that adding a value needs no
    # ALTER TYPE; the Python enum is the single definition.
    return Enum(cls, name=name, native_enum=False, create_constraint=False, length=16)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON()}  # noqa: RUF012


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    password_hash: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Scheduling: its share of a device against other projects', and its caps and quotas
    # (None: no cap).
    weight: Mapped[float] = mapped_column(Float, default=1.0, server_default="1")
    max_running_per_device: Mapped[int | None] = mapped_column(Integer)
    max_waiting_jobs: Mapped[int | None] = mapped_column(Integer)
    max_jobs_per_batch: Mapped[int | None] = mapped_column(Integer)
    # Signs its batches' webhooks (Standard Webhooks); the previous one signs too for a
    # while after a rotation.
    webhook_secret: Mapped[str | None] = mapped_column(String(100))
    previous_webhook_secret: Mapped[str | None] = mapped_column(String(100))
    webhook_secret_rotated_at: Mapped[datetime | None]


class ProjectUsage(Base):
    """What a project ran on a device: run seconds decayed with a half-life (fair share),
    and totals."""

    __tablename__ = "project_usage"

    project_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    device_type: Mapped[DeviceType] = mapped_column(
        _enum(DeviceType, "device_type"), primary_key=True
    )
    decayed_run_s: Mapped[float] = mapped_column(Float, default=0.0)
    decayed_at: Mapped[datetime] = mapped_column(default=utcnow)
    jobs: Mapped[int] = mapped_column(Integer, default=0)
    run_s: Mapped[float] = mapped_column(Float, default=0.0)


class WebhookDelivery(Base):
    """The outbox of batch webhooks: written with the batch's last transition, delivered
    by the scheduler; its id is the `webhook-id`, the same on every attempt."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    batch_id: Mapped[str] = mapped_column(String(36))
    project_id: Mapped[str] = mapped_column(String(36))
    url: Mapped[str] = mapped_column(Text)
    payload: Mapped[str] = mapped_column(Text)
    status: Mapped[DeliveryStatus] = mapped_column(_enum(DeliveryStatus, "delivery_status"))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_webhook_deliveries_batch", "batch_id", "created_at"),
        Index(
            "ix_webhook_deliveries_due",
            "next_attempt_at",
            postgresql_where=text("status = 'PENDING'"),
            sqlite_where=text("status = 'PENDING'"),
        ),
    )


class Membership(Base):
    __tablename__ = "memberships"

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiToken(Base):
    """An API token; only its SHA-256 is stored, the token itself is shown once."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class Batch(Base):
    __tablename__ = "batches"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    parent_id: Mapped[str | None] = mapped_column(String(36))
    status: Mapped[BatchStatus] = mapped_column(_enum(BatchStatus, "batch_status"))
    open: Mapped[bool] = mapped_column(Boolean)
    device_type: Mapped[DeviceType] = mapped_column(_enum(DeviceType, "device_type"))
    queue_priority: Mapped[QueuePriority] = mapped_column(_enum(QueuePriority, "queue_priority"))
    sequence_builder: Mapped[str | None] = mapped_column(Text)
    backend_configuration: Mapped[str | None] = mapped_column(Text)
    configuration: Mapped[dict[str, Any] | None]
    webhook: Mapped[str | None] = mapped_column(Text)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    start_datetime: Mapped[datetime | None]
    end_datetime: Mapped[datetime | None]
    # When its last job was added (an open batch idle for too long times out).
    last_job_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Per-status job counters, kept by the one writer of job statuses (scheduler.events).
    jobs_count: Mapped[int] = mapped_column(Integer, default=0)
    count_pending: Mapped[int] = mapped_column(Integer, default=0)
    count_running: Mapped[int] = mapped_column(Integer, default=0)
    count_done: Mapped[int] = mapped_column(Integer, default=0)
    count_error: Mapped[int] = mapped_column(Integer, default=0)
    count_canceled: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (
        # Lists: newest first within a project (one walk per project, merged);
        # `id` makes the order unique.
        Index("ix_batches_project_created_id", "project_id", "created_at", "id"),
        Index("ix_batches_status", "status"),
        # One index per list filter (GET /api/v1/batches).
        Index("ix_batches_user", "user_id"),
        Index("ix_batches_device_type", "device_type"),
        Index("ix_batches_queue_priority", "queue_priority"),
        Index("ix_batches_open", "open"),
        Index("ix_batches_project_jobs_count", "project_id", "jobs_count"),
        Index("ix_batches_parent", "parent_id"),
        Index(
            "ix_batches_id_prefix",
            "id",
            postgresql_ops={"id": "varchar_pattern_ops"},
        ),
    )

    def counts(self) -> dict[JobStatus, int]:
        return {
            JobStatus.PENDING: self.count_pending,
            JobStatus.RUNNING: self.count_running,
            JobStatus.DONE: self.count_done,
            JobStatus.ERROR: self.count_error,
            JobStatus.CANCELED: self.count_canceled,
        }

    def add_count(self, status: JobStatus, delta: int) -> None:
        attr = _COUNT_ATTR[status]
        setattr(self, attr, getattr(self, attr) + delta)


_COUNT_ATTR = {
    JobStatus.PENDING: "count_pending",
    JobStatus.RUNNING: "count_running",
    JobStatus.DONE: "count_done",
    JobStatus.ERROR: "count_error",
    JobStatus.CANCELED: "count_canceled",
}


class BatchTag(Base):
    """One row per tag of a batch, so that the `tag` filter is an index lookup."""

    __tablename__ = "batch_tags"

    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.id"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(200), primary_key=True)

    __table_args__ = (Index("ix_batch_tags_tag", "tag", "batch_id"),)


# The predicates of the partial indexes below. A query that states one literally can use
# its index even under a generic (prepared) plan, where a bound status could not prove it.
BACKLOG = text("status = 'PENDING' AND dispatched_at IS NULL")
IN_FLIGHT = text("status IN ('PENDING', 'RUNNING') AND dispatched_at IS NOT NULL")
_DONE = text("status = 'DONE'")
UNPURGED_ENDED = text("results_purged_at IS NULL AND end_timestamp IS NOT NULL")


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.id"))
    project_id: Mapped[str] = mapped_column(String(36))
    user_id: Mapped[str] = mapped_column(String(64))
    parent_id: Mapped[str | None] = mapped_column(String(36))
    creation_order: Mapped[int] = mapped_column(Integer)
    status: Mapped[JobStatus] = mapped_column(_enum(JobStatus, "job_status"))
    runs: Mapped[int] = mapped_column(Integer)
    variables: Mapped[dict[str, Any] | None]
    sequence: Mapped[str | None] = mapped_column(Text, doc="Only for jobs with their own sequence.")
    progress: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[list[str] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    start_timestamp: Mapped[datetime | None]
    end_timestamp: Mapped[datetime | None]
    # Internal dispatch sub-state; never exposed as a status.
    device_type: Mapped[DeviceType] = mapped_column(_enum(DeviceType, "device_type"))
    priority_rank: Mapped[int] = mapped_column(Integer, doc="QueuePriority.rank of the batch.")
    dispatched_at: Mapped[datetime | None]
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    # The device's own id of the job (a QPU job uid): a new attempt resumes it.
    remote_id: Mapped[str | None] = mapped_column(String(64))
    # What it asks of the device, for the run-time model (queue estimates).
    atoms: Mapped[int | None] = mapped_column(Integer)
    duration_ns: Mapped[int | None] = mapped_column(Integer)
    origin: Mapped[JobOrigin] = mapped_column(
        _enum(JobOrigin, "job_origin"), default=JobOrigin.CLIENT, server_default="CLIENT"
    )
    # When the results retention deleted its result and its own sequence (the row stays).
    results_purged_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_jobs_batch_order", "batch_id", "creation_order", unique=True),
        # The backlog per (device, level, project), first in first out: a dispatch decision
        # walks it (per project's head), whatever the backlog's size.
        Index(
            "ix_jobs_backlog",
            "device_type",
            "priority_rank",
            "project_id",
            "created_at",
            "batch_id",
            "creation_order",
            postgresql_where=BACKLOG,
            sqlite_where=BACKLOG,
        ),
        # Jobs handed to Redis and not ended: capacity and reconciliation read these.
        Index(
            "ix_jobs_in_flight",
            "device_type",
            "dispatched_at",
            postgresql_where=IN_FLIGHT,
            sqlite_where=IN_FLIGHT,
        ),
        # The run-time model learns from each device's last finished jobs.
        Index(
            "ix_jobs_done_by_end",
            "device_type",
            "end_timestamp",
            postgresql_where=_DONE,
            sqlite_where=_DONE,
        ),
        # The results retention walks ended jobs not yet purged, oldest end first; a purged
        # job leaves the index, so a turn never re-reads what earlier turns purged.
        Index(
            "ix_jobs_unpurged_by_end",
            "end_timestamp",
            postgresql_where=UNPURGED_ENDED,
            sqlite_where=UNPURGED_ENDED,
        ),
        # Lists: newest first within a project (and status); (batch_id, creation_order)
        # makes the order unique, so a page never sorts a whole batch. A list over several
        # projects merges one walk per project (scheduler.listing).
        Index("ix_jobs_project_created", "project_id", "created_at", "batch_id", "creation_order"),
        Index(
            "ix_jobs_project_status_created",
            "project_id",
            "status",
            "created_at",
            "batch_id",
            "creation_order",
        ),
        # One index per list filter (GET /api/v2/jobs), within a project: a filter without
        # a maintained total is counted from its index alone.
        Index("ix_jobs_user", "user_id"),
        # start_date, end_date: a batch's jobs share created_at, so this one stays tiny.
        Index("ix_jobs_project_created_at", "project_id", "created_at"),
        Index("ix_jobs_project_runs", "project_id", "runs"),
        Index("ix_jobs_project_origin", "project_id", "origin"),
        Index("ix_jobs_parent", "parent_id"),
        Index(
            "ix_jobs_project_id_prefix",
            "project_id",
            "id",
            postgresql_ops={"id": "varchar_pattern_ops"},
        ),
    )


class Result(Base):
    __tablename__ = "results"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), primary_key=True)
    counter: Mapped[dict[str, Any]]
    serialised_results: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class JobCount(Base):
    """How many jobs each (project, user, device, level) has in each status.

    Kept by the state machine in the same transaction as the jobs it counts, so list
    totals and metrics read a few rows instead of counting millions.
    """

    __tablename__ = "job_counts"

    project_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    device_type: Mapped[DeviceType] = mapped_column(
        _enum(DeviceType, "device_type"), primary_key=True
    )
    priority_rank: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[JobStatus] = mapped_column(_enum(JobStatus, "job_status"), primary_key=True)
    n: Mapped[int] = mapped_column(Integer, default=0)
