"""Fair share: levels first, then, within a level, the project furthest below its weighted
share of the device's recent run time, first in first out within the project.

A project's standing is `(decayed run seconds + expected seconds of its jobs in flight and
of those taken in this decision) / weight`; run time decays with a half-life, like
SLURM's fair-share factor. Charging the jobs in flight makes one decision already
alternate between projects (a window of messages is not one project's). Projects at their
running cap wait. Ties go to the oldest head.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Row
from sqlalchemy.orm import Session

from core.enums import DeviceType, QueuePriority
from scheduler.policies.backlog import Backlog, Queue
from scheduler.policies.base import ProjectState, waiting


class FairShare:
    def __init__(
        self,
        half_life_s: float,
        aging_s: Mapping[QueuePriority, float] | None = None,
        expected_run_s: Callable[[Session, DeviceType], float] = lambda _s, _d: 1.0,
    ) -> None:
        self.half_life_s = half_life_s
        self.aging_s = dict(aging_s or {})
        self.expected_run_s = expected_run_s

    def pick(
        self, session: Session, device: DeviceType, limit: int, now: datetime, lock: bool = True
    ) -> list[Row[Any]]:
        found = waiting(session, device, now, self.half_life_s)
        backlog = Backlog(session, device, now, self.aging_s, lock, found.pairs, limit)
        states = found.states
        each = self.expected_run_s(session, device) if states else 0.0

        def key(queue: Queue, state: ProjectState) -> tuple[Any, ...] | None:
            rank = backlog.effective_rank(queue)
            if rank is None or state.capped:
                return None
            standing = (state.usage_s + (state.in_flight + state.picked) * each) / state.weight
            return (rank, standing, *backlog.age_key(queue.rows[0]))

        return backlog.take(limit, states, key)
