"""The interface every dispatch policy implements, and what policies share: the backlog's
queues and the states of the projects waiting (weights, caps, usage, jobs in flight)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import Row, func, select, text, tuple_
from sqlalchemy.orm import Session

from core.enums import ACTIVE_JOB_STATUSES, DeviceType, JobStatus
from scheduler.models import Job, Project, ProjectUsage

# What the dispatcher needs of a job to build its message.
PICKED = (
    Job.id,
    Job.batch_id,
    Job.project_id,
    Job.priority_rank,
    Job.attempt,
    Job.variables,
    Job.runs,
    Job.sequence,
    Job.remote_id,
    Job.atoms,
    Job.duration_ns,
)


class Policy(Protocol):
    def pick(
        self, session: Session, device: DeviceType, limit: int, now: datetime, lock: bool = True
    ) -> list[Row[Any]]:
        """Up to `limit` backlog jobs of `device` to dispatch now, in order.

        Rows carry the columns of `PICKED` (plus `created_at`, `creation_order`); with
        `lock` they are locked `FOR UPDATE SKIP LOCKED` in the caller's transaction, so two
        dispatchers never pick the same job. Without, the same order is only read (queue
        positions).
        """
        ...


@dataclass
class ProjectState:
    """What a policy knows of a project with backlog on the device."""

    weight: float = 1.0
    max_running: int | None = None
    in_flight: int = 0  # dispatched or running on the device
    picked: int = 0  # taken in this decision
    usage_s: float = 0.0  # its run seconds on the device, decayed to now

    @property
    def capped(self) -> bool:
        return self.max_running is not None and self.in_flight + self.picked >= self.max_running


@dataclass
class Waiting:
    """A device's backlog at a glance: its (level, project) queues, in order, and the state
    of each project that has one."""

    pairs: list[tuple[int, str]]
    states: dict[str, ProjectState]


# PostgreSQL: the (level, project) pairs with backlog, by a skip scan of ix_jobs_backlog
# (a recursive CTE: one index seek per pair), with each project's weight, cap, decayed
# usage and jobs in flight (the device's in-flight jobs counted once, by project, from
# ix_jobs_in_flight; not once per pair), in one round trip. The predicates are the partial indexes'
# own, literally, so that a generic plan still uses them.
_WAITING = text(
    """
    WITH RECURSIVE pairs(priority_rank, project_id) AS (
        (SELECT priority_rank, project_id FROM jobs
         WHERE device_type = :device AND status = 'PENDING' AND dispatched_at IS NULL
         ORDER BY priority_rank, project_id LIMIT 1)
        UNION ALL
        SELECT nxt.priority_rank, nxt.project_id FROM pairs, LATERAL (
            SELECT j.priority_rank, j.project_id FROM jobs j
            WHERE j.device_type = :device AND j.status = 'PENDING' AND j.dispatched_at IS NULL
              AND (j.priority_rank, j.project_id) > (pairs.priority_rank, pairs.project_id)
            ORDER BY j.priority_rank, j.project_id LIMIT 1
        ) nxt
    ), in_flight AS (
        SELECT project_id, count(*) AS n FROM jobs
        WHERE device_type = :device
          AND status IN ('PENDING', 'RUNNING') AND dispatched_at IS NOT NULL
        GROUP BY project_id
    )
    SELECT pairs.priority_rank, pairs.project_id, p.weight, p.max_running_per_device,
        u.decayed_run_s, u.decayed_at, coalesce(f.n, 0) AS in_flight
    FROM pairs
    LEFT JOIN projects p ON p.id = pairs.project_id
    LEFT JOIN project_usage u ON u.project_id = pairs.project_id AND u.device_type = :device
    LEFT JOIN in_flight f ON f.project_id = pairs.project_id
    ORDER BY pairs.priority_rank, pairs.project_id
    """
)


def waiting(
    session: Session, device: DeviceType, now: datetime, half_life_s: float | None = None
) -> Waiting:
    """The device's backlog queues and their projects' states (usage when `half_life_s`)."""
    if session.get_bind().dialect.name != "postgresql":
        return _waiting_step_by_step(session, device, now, half_life_s)
    found = Waiting([], {})
    for row in session.execute(_WAITING, {"device": device.value}):
        found.pairs.append((int(row.priority_rank), str(row.project_id)))
        if row.project_id in found.states:
            continue
        state = found.states[row.project_id] = ProjectState(
            weight=float(row.weight or 1.0), max_running=row.max_running_per_device,
            in_flight=int(row.in_flight),
        )  # fmt: skip
        if half_life_s and row.decayed_run_s:
            state.usage_s = _decayed(row.decayed_run_s, row.decayed_at, now, half_life_s)
    return found


def _decayed(run_s: float, at: datetime, now: datetime, half_life_s: float) -> float:
    if at.tzinfo is None:  # a plain text() result: the store keeps UTC
        at = at.replace(tzinfo=UTC)
    return float(run_s * 0.5 ** (max(0.0, (now - at).total_seconds()) / half_life_s))


def _waiting_step_by_step(
    session: Session, device: DeviceType, now: datetime, half_life_s: float | None
) -> Waiting:
    """The same, one statement at a time (SQLite has no LATERAL)."""
    pairs: list[tuple[int, str]] = []
    backlog = [Job.device_type == device, Job.status == JobStatus.PENDING,
               Job.dispatched_at.is_(None)]  # fmt: skip
    while True:
        query = select(Job.priority_rank, Job.project_id).where(*backlog)
        if pairs:
            query = query.where(tuple_(Job.priority_rank, Job.project_id) > pairs[-1])
        row = session.execute(query.order_by(Job.priority_rank, Job.project_id).limit(1)).first()
        if row is None:
            break
        pairs.append((int(row[0]), str(row[1])))
    project_ids = {p for _, p in pairs}
    states = {p: ProjectState() for p in project_ids}
    if not project_ids:
        return Waiting(pairs, states)
    for project_id, weight, cap in session.execute(
        select(Project.id, Project.weight, Project.max_running_per_device).where(
            Project.id.in_(project_ids)
        )
    ):
        states[project_id].weight = float(weight or 1.0)
        states[project_id].max_running = cap
    for project_id, n in session.execute(
        select(Job.project_id, func.count())
        .where(
            Job.device_type == device,
            Job.status.in_(ACTIVE_JOB_STATUSES),
            Job.dispatched_at.is_not(None),
            Job.project_id.in_(project_ids),
        )
        .group_by(Job.project_id)
    ):
        states[project_id].in_flight = int(n)
    if half_life_s:
        for usage in session.scalars(
            select(ProjectUsage).where(
                ProjectUsage.device_type == device, ProjectUsage.project_id.in_(project_ids)
            )
        ):
            states[usage.project_id].usage_s = _decayed(
                usage.decayed_run_s, usage.decayed_at, now, half_life_s
            )
    return Waiting(pairs, states)
