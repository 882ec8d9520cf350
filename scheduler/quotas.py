"""A project's submit quotas: most jobs in one batch, most jobs waiting in all.

Checked with the project's row locked, so two submissions of one project are counted one
after the other; over a quota is a 429 naming it, and nothing is written. (A running cap,
the third setting, only holds jobs back: the dispatch policies apply it.)
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.enums import JobStatus
from core.errors import QuotaExceededError
from scheduler.models import JobCount
from scheduler.projects import get_project

RETRY_AFTER_S = 60


def check(session: Session, project_id: str, field: str, batch_jobs: int, new_jobs: int) -> None:
    project = get_project(session, project_id, lock=True)
    per_batch = project.max_jobs_per_batch
    if per_batch is not None and batch_jobs > per_batch:
        raise QuotaExceededError(
            field, f"{batch_jobs} jobs is over this project's quota of {per_batch} jobs per batch"
        )
    waiting_cap = project.max_waiting_jobs
    if waiting_cap is None:
        return
    waiting = int(
        session.scalar(
            select(func.coalesce(func.sum(JobCount.n), 0)).where(
                JobCount.project_id == project_id, JobCount.status == JobStatus.PENDING
            )
        )
        or 0
    )
    if waiting + new_jobs > waiting_cap:
        raise QuotaExceededError(
            field,
            f"{new_jobs} more jobs would be over this project's quota of {waiting_cap} waiting "
            f"jobs ({waiting} are waiting)",
            retry_after_s=RETRY_AFTER_S,
        )
