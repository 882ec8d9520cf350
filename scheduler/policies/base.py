"""The interface every dispatch policy implements, and what policies share: the caps."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Row, func, select
from sqlalchemy.orm import Session

from core.enums import ACTIVE_JOB_STATUSES, DeviceType
from scheduler.models import Job, Project

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

    @property
    def capped(self) -> bool:
        return self.max_running is not None and self.in_flight + self.picked >= self.max_running


def project_states(
    session: Session, device: DeviceType, project_ids: set[str]
) -> dict[str, ProjectState]:
    """Weights, running caps and jobs in flight on `device` (an index range: in flight is
    at most the dispatch window plus the running jobs)."""
    states = {p: ProjectState() for p in project_ids}
    if not project_ids:
        return states
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
    return states
