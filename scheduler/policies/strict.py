"""Strict priority: HIGH before MEDIUM before LOW (aging included), then first in first out
across projects; projects at their running cap wait."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Row
from sqlalchemy.orm import Session

from core.enums import DeviceType, QueuePriority
from scheduler.policies.backlog import Backlog
from scheduler.policies.base import waiting


class StrictPriority:
    def __init__(self, aging_s: Mapping[QueuePriority, float] | None = None) -> None:
        self.aging_s = dict(aging_s or {})

    def pick(
        self, session: Session, device: DeviceType, limit: int, now: datetime, lock: bool = True
    ) -> list[Row[Any]]:
        found = waiting(session, device, now)
        backlog = Backlog(session, device, now, self.aging_s, lock, found.pairs, min(limit, 64))
        states = found.states
        picked: list[Row[Any]] = []
        while len(picked) < limit:
            ready = []
            for queue in backlog.queues:
                rank = backlog.effective_rank(queue)
                if rank is not None and not states[queue.project_id].capped:
                    head = backlog.head(queue)
                    assert head is not None
                    ready.append(((rank, *backlog.age_key(head)), queue))
            if not ready:
                return picked
            _, queue = min(ready, key=lambda r: r[0])
            picked.append(backlog.pop(queue))
            states[queue.project_id].picked += 1
        return picked
