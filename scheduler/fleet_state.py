"""The fleet as an operator sees it now: jobs per device and level, workers, slots, backlog.

Read, never counted in memory, so it is exact after any restart: the store's maintained
`job_counts` (a few rows whatever the number of jobs), the open batches (an index count),
the oldest waiting job per device (index lookups), and what workers and the watch loop
keep in Redis. The scheduler's `/metrics` and `atomfleet status` both read it here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import redis
from sqlalchemy import ScalarSelect, Select, func, select
from sqlalchemy.orm import Session

from core.enums import BatchStatus, DeviceStatus, DeviceType, JobStatus, QueuePriority
from core.names import RedisKeys
from scheduler.device_state import DeviceState, public_status
from scheduler.models import BACKLOG, IN_FLIGHT, Batch, Job, JobCount
from scheduler.workers import live_workers_of

RANKS = sorted(p.rank for p in QueuePriority)
OPEN_BATCH_STATUSES = (BatchStatus.PENDING, BatchStatus.RUNNING)


@dataclass
class StoreState:
    # (device, priority rank, status) -> jobs, from the maintained counts
    jobs: Counter[tuple[DeviceType, int, JobStatus]] = field(default_factory=Counter)
    batches_open: int = 0
    # device -> creation time of its oldest PENDING job (absent: none waits)
    oldest_waiting: dict[DeviceType, datetime] = field(default_factory=dict)

    def waiting(self, device: DeviceType, rank: int) -> int:
        return self.jobs[(device, rank, JobStatus.PENDING)]

    def by_status(self, device: DeviceType, status: JobStatus) -> int:
        return sum(self.jobs[(device, rank, status)] for rank in RANKS)

    def devices(self) -> set[DeviceType]:
        return {device for device, _, _ in self.jobs}


def read_store(session: Session, devices: Iterable[DeviceType]) -> StoreState:
    """Three statements, whatever the size of the store."""
    state = StoreState()
    rows = session.execute(
        select(
            JobCount.device_type, JobCount.priority_rank, JobCount.status, func.sum(JobCount.n)
        ).group_by(JobCount.device_type, JobCount.priority_rank, JobCount.status)
    )
    for device, rank, status, n in rows:
        state.jobs[(device, rank, status)] = int(n or 0)
    state.batches_open = int(
        session.scalar(
            select(func.count()).select_from(Batch).where(Batch.status.in_(OPEN_BATCH_STATUSES))
        )
        or 0
    )
    state.oldest_waiting = _oldest_waiting(session, sorted(set(devices) | state.devices()))
    return state


def oldest_waiting_query(devices: list[DeviceType]) -> Select[*tuple[Any, ...]]:
    """Per device, the oldest PENDING job: the first entry of the backlog index at each level,
    and the few dispatched jobs still waiting in Redis (the in-flight index), as one
    statement of scalar subqueries (`len(RANKS) + 1` columns per device)."""
    columns: list[ScalarSelect[datetime]] = []
    for device in devices:
        for rank in RANKS:
            columns.append(
                select(Job.created_at)
                .where(Job.device_type == device, Job.priority_rank == rank, BACKLOG)
                .order_by(Job.created_at)
                .limit(1)
                .scalar_subquery()
            )
        columns.append(
            select(func.min(Job.created_at))
            .where(Job.device_type == device, IN_FLIGHT, Job.status == JobStatus.PENDING)
            .scalar_subquery()
        )
    return select(*columns)


def _oldest_waiting(session: Session, devices: list[DeviceType]) -> dict[DeviceType, datetime]:
    if not devices:
        return {}
    row = session.execute(oldest_waiting_query(devices)).one()
    per = len(RANKS) + 1
    found = {}
    for i, device in enumerate(devices):
        times = [t for t in row[i * per : (i + 1) * per] if t is not None]
        if times:
            found[device] = min(times)
    return found


@dataclass(frozen=True)
class DeviceFleet:
    """A device's live workers, as their heartbeats and the watch loops say."""

    workers: int = 0
    slots: int = 0
    busy: int = 0
    stalled: bool = False
    status: DeviceStatus = DeviceStatus.DOWN  # the public status (device_state.public_status)

    @property
    def idle(self) -> int:
        return self.slots - self.busy


def read_fleet(
    client: redis.Redis, keys: RedisKeys, devices: Iterable[DeviceType]
) -> dict[DeviceType, DeviceFleet]:
    devices = list(devices)
    views = live_workers_of(client, keys, devices)
    states = DeviceState(client, keys).read_many(devices)
    fleet = {}
    for device in devices:
        stalled, operational = states[device]
        workers = views[device]
        fleet[device] = DeviceFleet(
            workers=len(workers),
            slots=sum(w.concurrency for w in workers),
            busy=sum(min(w.busy, w.concurrency) for w in workers),
            stalled=stalled,
            status=public_status(device, len(workers), stalled, operational),
        )
    return fleet


def events_backlog(client: redis.Redis, keys: RedisKeys) -> int:
    """Worker events not yet applied: the consumer deletes each entry once applied, so the
    stream's length is exactly what waits (read or not)."""
    return int(client.xlen(keys.events_stream))
