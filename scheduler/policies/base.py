"""The interface every dispatch policy implements."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Row
from sqlalchemy.orm import Session

from core.enums import DeviceType
from scheduler.models import Job

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
)


class Policy(Protocol):
    def pick(
        self, session: Session, device: DeviceType, limit: int, now: datetime
    ) -> list[Row[Any]]:
        """Up to `limit` backlog jobs of `device` to dispatch now, in order, locked.

        Rows carry the columns of `PICKED`; they are locked `FOR UPDATE SKIP LOCKED` in the
        caller's transaction, so two dispatchers never pick the same job.
        """
        ...
