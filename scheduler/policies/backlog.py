"""A device's backlog as queues, one per (level, project), each first in first out.

Read from the `ix_jobs_backlog` index (device, level, project, age): the distinct
(level, project) pairs by a skip scan (one index seek per pair; `base.waiting`), then
each queue's oldest jobs in small chunks. A policy pops from the queues in its own order; what it
costs depends on the jobs it takes and the number of projects waiting, never on the
size of the backlog.

Aging: a queue's head that waited longer than its level's aging is served one level
higher, and one more for each further aging period of the level reached (a LOW job
reaches HIGH after AGING[LOW] + AGING[MEDIUM]): nothing waits forever.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Row, select, tuple_
from sqlalchemy.orm import Session

from core.enums import DeviceType, JobStatus, QueuePriority
from scheduler.models import Job
from scheduler.policies.base import PICKED

_BY_RANK = {p.rank: p for p in QueuePriority}


@dataclass
class Queue:
    rank: int
    project_id: str
    rows: deque[Row[Any]] = field(default_factory=deque)
    exhausted: bool = False
    last: Row[Any] | None = None  # the last row read: the next chunk starts after it


class Backlog:
    def __init__(
        self,
        session: Session,
        device: DeviceType,
        now: datetime,
        aging_s: Mapping[QueuePriority, float],
        lock: bool,
        pairs: list[tuple[int, str]],
        chunk: int = 64,
    ) -> None:
        self.session = session
        self.device = device
        self.now = now
        self.aging_s = aging_s
        self.lock = lock
        self.chunk = chunk
        self.queues = [Queue(rank, project) for rank, project in pairs]

    def _where(self) -> list[Any]:
        return [
            Job.device_type == self.device,
            Job.status == JobStatus.PENDING,
            Job.dispatched_at.is_(None),
        ]

    def head(self, queue: Queue) -> Row[Any] | None:
        if not queue.rows and not queue.exhausted:
            self._fill(queue)
        return queue.rows[0] if queue.rows else None

    def pop(self, queue: Queue) -> Row[Any]:
        return queue.rows.popleft()

    def _fill(self, queue: Queue) -> None:
        query = select(*PICKED, Job.created_at, Job.creation_order).where(
            *self._where(), Job.priority_rank == queue.rank, Job.project_id == queue.project_id
        )
        last = queue.last
        if last is not None:
            query = query.where(
                tuple_(Job.created_at, Job.batch_id, Job.creation_order)
                > (last.created_at, last.batch_id, last.creation_order)
            )
        query = query.order_by(Job.created_at, Job.batch_id, Job.creation_order).limit(self.chunk)
        if self.lock:
            query = query.with_for_update(skip_locked=True)
        rows = list(self.session.execute(query))
        queue.rows.extend(rows)
        if rows:
            queue.last = rows[-1]
        if len(rows) < self.chunk:
            queue.exhausted = True

    def effective_rank(self, queue: Queue) -> int | None:
        """The level the queue's head is served at (aging included); None when empty."""
        head = self.head(queue)
        if head is None:
            return None
        return aged_rank(queue.rank, (self.now - head.created_at).total_seconds(), self.aging_s)

    @staticmethod
    def age_key(row: Row[Any]) -> tuple[Any, ...]:
        """First in, first out: submission time, then batch and position in it."""
        return (row.created_at, row.batch_id, row.creation_order)


def aged_rank(rank: int, waited_s: float, aging_s: Mapping[QueuePriority, float]) -> int:
    """The level a job of level `rank` that waited `waited_s` is served at."""
    while rank > 0:
        aging = aging_s.get(_BY_RANK[rank])
        if aging is None or waited_s < aging:
            break
        waited_s -= aging
        rank -= 1
    return rank
