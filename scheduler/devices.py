"""The devices this deployment serves: their jobs waiting and running (maintained counts)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.enums import DeviceType, JobStatus
from scheduler.models import JobCount


def job_counts(session: Session, devices: list[DeviceType]) -> dict[DeviceType, dict[str, int]]:
    """PENDING and RUNNING jobs per device, from the maintained counts."""
    rows = session.execute(
        select(JobCount.device_type, JobCount.status, func.sum(JobCount.n))
        .where(JobCount.status.in_([JobStatus.PENDING, JobStatus.RUNNING]))
        .group_by(JobCount.device_type, JobCount.status)
    ).all()
    counts = {d: {JobStatus.PENDING.value: 0, JobStatus.RUNNING.value: 0} for d in devices}
    for device, status, n in rows:
        if device in counts:
            counts[device][status.value] = int(n or 0)
    return counts
