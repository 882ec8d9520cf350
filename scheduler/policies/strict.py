"""Strict priority: HIGH before MEDIUM before LOW, then first-in first-out.

The choice is a walk of the `ix_jobs_backlog` index: its cost does not depend on the
size of the backlog.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Row, select
from sqlalchemy.orm import Session

from core.enums import DeviceType, JobStatus
from scheduler.models import Job
from scheduler.policies.base import PICKED


class StrictPriority:
    def pick(
        self, session: Session, device: DeviceType, limit: int, now: datetime
    ) -> list[Row[Any]]:
        return list(
            session.execute(
                select(*PICKED)
                .where(
                    Job.device_type == device,
                    Job.status == JobStatus.PENDING,
                    Job.dispatched_at.is_(None),
                )
                .order_by(Job.priority_rank, Job.created_at, Job.batch_id, Job.creation_order)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        )
