"""A device's backlog as queues, one per (level, project), each first in first out.

Read from the `ix_jobs_backlog` index (device, level, project, age): the distinct
(level, project) pairs by a skip scan (one index seek per pair; `base.waiting`), then the
heads of every queue in one statement (on PostgreSQL, a LATERAL join: one index seek per
queue), then a queue's next jobs in chunks when a policy takes more than its head. A policy
pops from the queues in its own order; what it costs depends on the jobs it takes and the
number of projects waiting, never on the size of the backlog. A dispatch decision locks
what it reads, in small chunks, with every column a message needs; an order only read
(queue positions) reads the few columns an estimate needs, in large chunks.

Aging: a queue's head that waited longer than its level's aging is served one level
higher, and one more for each further aging period of the level reached (a LOW job
reaches HIGH after AGING[LOW] + AGING[MEDIUM]): nothing waits forever.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, Row, Select, String, bindparam, column, func, select, true, tuple_
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from core.enums import DeviceType, QueuePriority
from scheduler.models import BACKLOG, Job
from scheduler.policies.base import PICKED, ProjectState

_BY_RANK = {p.rank: p for p in QueuePriority}
_AGE_ORDER = (Job.created_at, Job.batch_id, Job.creation_order)  # first in, first out
LOCKED_CHUNK = 64  # rows a dispatch decision reads (and locks) at once from one queue
READ_CHUNK = 1024  # rows an order only read reads at once from one queue
# What an order only read needs of a job: its queue, its age, what its run time depends on.
READ = (Job.id, Job.batch_id, Job.project_id, Job.priority_rank, Job.runs, Job.atoms,
        Job.duration_ns)  # fmt: skip


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
        limit: int,
    ) -> None:
        self.session = session
        self.device = device
        self.now = now
        self.aging_s = aging_s
        self.lock = lock
        self.chunk = min(limit, LOCKED_CHUNK if lock else READ_CHUNK)
        self.queues = [Queue(rank, project) for rank, project in pairs]
        self._heads_read = False

    def head(self, queue: Queue) -> Row[Any] | None:
        if not self._heads_read:
            self._read_heads()
        if not queue.rows and not queue.exhausted:
            self._fill(queue)
        return queue.rows[0] if queue.rows else None

    def _read_heads(self) -> None:
        """Every queue's first few jobs in one statement (PostgreSQL), enough that a
        decision spread over the queues needs no second read of most of them."""
        self._heads_read = True
        if len(self.queues) < 2 or self.session.get_bind().dialect.name != "postgresql":
            return  # one queue: its first chunk; SQLite has no LATERAL: one read a queue
        per_queue = min(self.chunk, -(-self.chunk // len(self.queues)) + 1)
        read: dict[tuple[int, str], list[Row[Any]]] = {}
        params = {
            "device": self.device.value,
            "ranks": [q.rank for q in self.queues],
            "projects": [q.project_id for q in self.queues],
            "per_queue": per_queue,
        }
        for row in self.session.execute(_HEADS[self.lock], params):
            read.setdefault((row.level, row.project), []).append(row)
        for queue in self.queues:
            rows = read.get((queue.rank, queue.project_id), [])
            queue.rows.extend(rows)
            queue.last = rows[-1] if rows else None
            queue.exhausted = len(rows) < per_queue

    def pop(self, queue: Queue) -> Row[Any]:
        return queue.rows.popleft()

    def take(
        self,
        limit: int,
        states: Mapping[str, ProjectState],
        key: Callable[[Queue, ProjectState], tuple[Any, ...] | None],
    ) -> list[Row[Any]]:
        """Up to `limit` jobs, each the head of the queue whose `key` is least (None: not
        served now), ties to the earlier queue. A key depends only on its queue's head and
        its project's state, so only the queues of the project just served are re-keyed:
        a heap, not a scan of every queue per job."""
        of_project: dict[str, list[int]] = {}
        for i, queue in enumerate(self.queues):
            of_project.setdefault(queue.project_id, []).append(i)
        version = [0] * len(self.queues)
        heap: list[tuple[tuple[Any, ...], int, int]] = []

        def rekey(i: int) -> None:
            version[i] += 1
            queue = self.queues[i]
            found = key(queue, states[queue.project_id])
            if found is not None:
                heapq.heappush(heap, (found, i, version[i]))

        for i in range(len(self.queues)):
            rekey(i)
        picked: list[Row[Any]] = []
        while heap and len(picked) < limit:
            _, i, seen = heapq.heappop(heap)
            if seen != version[i]:
                continue  # re-keyed since
            queue = self.queues[i]
            picked.append(self.pop(queue))
            states[queue.project_id].picked += 1
            if len(picked) < limit:  # (re-keying may read the queue's next jobs)
                for j in of_project[queue.project_id]:
                    rekey(j)
        return picked

    def _fill(self, queue: Queue) -> None:
        params: dict[str, Any] = {
            "device": self.device.value,
            "rank": queue.rank,
            "project": queue.project_id,
            "chunk": self.chunk,
        }
        last = queue.last
        if last is not None:
            params.update(created=last.created_at, batch=last.batch_id, order=last.creation_order)
        rows = list(self.session.execute(_NEXT[self.lock, last is not None], params))
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


def _columns(lock: bool) -> tuple[Any, ...]:
    return (*(PICKED if lock else READ), Job.created_at, Job.creation_order)


def _heads(lock: bool) -> Select[Any]:
    """The first `per_queue` jobs of each (level, project) queue named by the arrays
    `ranks` and `projects`: one index seek per queue. Built once (its SQL is cached); the
    backlog predicate is the partial index's own, literally, so a generic plan uses it."""
    pairs = (
        func.unnest(
            bindparam("ranks", type_=ARRAY(Integer)), bindparam("projects", type_=ARRAY(String))
        )
        .table_valued(column("level", Integer), column("project", String))
        .render_derived(name="pairs")
    )
    jobs = (
        select(*_columns(lock))
        .where(
            Job.device_type == bindparam("device"),
            BACKLOG,
            Job.priority_rank == pairs.c.level,
            Job.project_id == pairs.c.project,
        )
        .order_by(*_AGE_ORDER)
        .limit(bindparam("per_queue", type_=Integer))
    )
    if lock:
        jobs = jobs.with_for_update(skip_locked=True)
    heads = jobs.lateral("heads")
    return select(pairs.c.level, pairs.c.project, heads).select_from(pairs).join(heads, true())


def _next(lock: bool, after: bool) -> Select[Any]:
    """A queue's next `chunk` jobs, from its start or `after` the last row read (`created`,
    `batch`, `order`). Built once, like `_heads`."""
    query = select(*_columns(lock)).where(
        Job.device_type == bindparam("device"),
        BACKLOG,
        Job.priority_rank == bindparam("rank"),
        Job.project_id == bindparam("project"),
    )
    if after:
        query = query.where(
            tuple_(*_AGE_ORDER)
            > tuple_(
                bindparam("created", type_=Job.created_at.type),
                bindparam("batch"),
                bindparam("order", type_=Integer),
            )
        )
    query = query.order_by(*_AGE_ORDER).limit(bindparam("chunk", type_=Integer))
    return query.with_for_update(skip_locked=True) if lock else query


_HEADS = {lock: _heads(lock) for lock in (False, True)}
_NEXT = {(lock, after): _next(lock, after) for lock in (False, True) for after in (False, True)}


def aged_rank(rank: int, waited_s: float, aging_s: Mapping[QueuePriority, float]) -> int:
    """The level a job of level `rank` that waited `waited_s` is served at."""
    while rank > 0:
        aging = aging_s.get(_BY_RANK[rank])
        if aging is None or waited_s < aging:
            break
        waited_s -= aging
        rank -= 1
    return rank
