"""What operators set on a project (its share and its caps) and see of it (usage, shares)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.enums import DeviceType
from core.errors import InvalidRequestError, NotFoundError
from scheduler.models import Project, ProjectUsage, utcnow
from scheduler.webhooks.signing import new_secret


def get_project(session: Session, project_id: str, lock: bool = False) -> Project:
    query = select(Project).where(Project.id == project_id)
    project = session.scalar(query.with_for_update() if lock else query)
    if project is None:
        raise NotFoundError("project", project_id)
    return project


def describe(project: Project) -> dict[str, Any]:
    return {
        "project_id": project.id,
        "name": project.name,
        "weight": project.weight,
        "max_running_per_device": project.max_running_per_device,
        "max_waiting_jobs": project.max_waiting_jobs,
        "max_jobs_per_batch": project.max_jobs_per_batch,
        "webhook_secret": project.webhook_secret,
    }


def configure(session: Session, project_id: str, **changes: Any) -> Project:
    """Set weight and caps (a cap of 0 or less removes it); None leaves a field as it is."""
    project = get_project(session, project_id, lock=True)
    weight = changes.pop("weight", None)
    if weight is not None:
        if not weight > 0:
            raise InvalidRequestError.single("weight", "must be more than 0")
        project.weight = float(weight)
    for name in ("max_running_per_device", "max_waiting_jobs", "max_jobs_per_batch"):
        value = changes.pop(name, None)
        if value is not None:
            setattr(project, name, int(value) if value > 0 else None)
    if changes:
        raise InvalidRequestError.single(next(iter(changes)), "unknown project setting")
    return project


def rotate_webhook_secret(session: Session, project_id: str) -> Project:
    """A new secret; the previous one still signs for a day (receivers switch meanwhile)."""
    project = get_project(session, project_id, lock=True)
    project.previous_webhook_secret = project.webhook_secret
    project.webhook_secret = new_secret()
    project.webhook_secret_rotated_at = utcnow()
    return project


def decayed(usage: ProjectUsage, now: datetime, half_life_s: float) -> float:
    """Run seconds decayed to `now`: usage * 0.5^(elapsed / half-life)."""
    elapsed = max(0.0, (now - usage.decayed_at).total_seconds())
    return float(usage.decayed_run_s * 0.5 ** (elapsed / half_life_s))


@dataclass(frozen=True)
class UsageRow:
    project_id: str
    name: str
    device_type: DeviceType
    weight: float
    jobs: int
    run_s: float
    recent_run_s: float
    share: float  # of the device's recent run time


def usage_report(session: Session, half_life_s: float) -> list[UsageRow]:
    now = utcnow()
    rows = session.execute(
        select(ProjectUsage, Project).join(Project, Project.id == ProjectUsage.project_id)
    ).all()
    recent = {(u.project_id, u.device_type): decayed(u, now, half_life_s) for u, _ in rows}
    per_device: dict[DeviceType, float] = {}
    for (_, device), value in recent.items():
        per_device[device] = per_device.get(device, 0.0) + value
    return sorted(
        (
            UsageRow(
                project_id=p.id,
                name=p.name,
                device_type=u.device_type,
                weight=p.weight,
                jobs=u.jobs,
                run_s=u.run_s,
                recent_run_s=recent[(p.id, u.device_type)],
                share=recent[(p.id, u.device_type)] / per_device[u.device_type]
                if per_device[u.device_type]
                else 0.0,
            )
            for u, p in rows
        ),
        key=lambda r: (r.device_type.value, -r.share, r.name),
    )
