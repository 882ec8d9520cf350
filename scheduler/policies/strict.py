"""Strict priority: HIGH before MEDIUM before LOW (aging included), then first in first out
across projects; projects at their running cap wait."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Row
from sqlalchemy.orm import Session

from core.enums import DeviceType, QueuePriority
from scheduler.policies.backlog import Backlog, Queue
from scheduler.policies.base import ProjectState, waiting


class StrictPriority:
    def __init__(self, aging_s: Mapping[QueuePriority, float] | None = None) -> None:
        self.aging_s = dict(aging_s or {})

    def pick(
        self, session: Session, device: DeviceType, limit: int, now: datetime, lock: bool = True
    ) -> list[Row[Any]]:
        found = waiting(session, device, now)
        backlog = Backlog(session, device, now, self.aging_s, lock, found.pairs, limit)

        def key(queue: Queue, state: ProjectState) -> tuple[Any, ...] | None:
            rank = backlog.effective_rank(queue)
            if rank is None or state.capped:
                return None
            return (rank, *backlog.age_key(queue.rows[0]))

        return backlog.take(limit, found.states, key)
