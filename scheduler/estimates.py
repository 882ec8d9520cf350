"""Queue positions and start/finish estimates of waiting jobs (no public cloud gives these).

- Position: the jobs ahead of a PENDING job on its device: those already handed to Redis
  (HIGH first, then in the order sent), then the backlog in the dispatch policy's order
  (the policy itself is asked, without locking). The first `EXACT_UP_TO` positions of a
  device are exact, computed at most every `TTL_S` (again at once for a job newer than the
  order, when the order held every waiting job); a deeper job gets an approximation: the
  other jobs waiting on its device at its level or above (maintained counts, no scan).
- Run time: scheduler.run_times' model, learned per device from its last DONE jobs.
- Start: now + (what the running jobs still need + the expected run time of the jobs
  ahead) / the device's parallel slots (live worker slots, at most its capacity); end:
  start + the job's own expected run time. Unknown (null) without workers or a model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.catalog import entry
from core.config import Settings
from core.enums import DeviceType, JobStatus
from core.names import RedisKeys
from scheduler.models import Job, JobCount, utcnow
from scheduler.policies import make_policy
from scheduler.policies.base import Policy
from scheduler.run_times import RunTimeModel, RunTimes
from scheduler.workers import live_slots

EXACT_UP_TO = 10_000
TTL_S = 2.0


@dataclass
class _DeviceOrder:
    at: float
    ahead: dict[str, int]  # job id -> jobs ahead of it (exact for the first EXACT_UP_TO)
    expected_ahead: dict[str, float]  # job id -> expected seconds of the jobs ahead
    running_left_s: float
    slots: int
    complete: bool  # every waiting job of the device is in `ahead`


@dataclass
class Estimate:
    queue_position: int | None = None
    estimated_start_time: datetime | None = None
    estimated_end_time: datetime | None = None


@dataclass
class QueueEstimator:
    settings: Settings
    client: redis.Redis
    policy: Policy | None = None
    run_times: RunTimes = field(default_factory=lambda: RunTimes())
    _orders: dict[DeviceType, _DeviceOrder] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.policy = self.policy or make_policy(self.settings, self.run_times)
        self.keys = RedisKeys(self.settings.namespace)

    def estimate(self, session: Session, jobs: list[Job]) -> dict[str, Estimate]:
        """An estimate for each PENDING job of `jobs` (others are not waiting)."""
        found: dict[str, Estimate] = {}
        now = utcnow()
        deep: dict[tuple[DeviceType, int], int] = {}
        refreshed: set[float] = set()
        for job in jobs:
            if job.status != JobStatus.PENDING:
                continue
            order = self._order(session, job.device_type)
            if job.id not in order.ahead and order.complete and order.at not in refreshed:
                # newer than the cached order, which held every waiting job: look again
                order = self._order(session, job.device_type, fresh=True)
                refreshed.add(order.at)
            model = self.model(session, job.device_type)
            ahead = order.ahead.get(job.id)
            expected_ahead = order.expected_ahead.get(job.id)
            if ahead is None:  # deeper than the exact part of the order
                key = (job.device_type, job.priority_rank)
                if key not in deep:
                    deep[key] = self._approximate_ahead(session, job)
                ahead = deep[key]
                each = model.predict(None, None, None)
                expected_ahead = ahead * each if each is not None else None
            own = model.predict(job.runs, job.duration_ns, job.atoms)
            estimate = Estimate(queue_position=ahead)
            if order.slots and expected_ahead is not None and own is not None:
                wait_s = (order.running_left_s + expected_ahead) / order.slots
                estimate.estimated_start_time = now + timedelta(seconds=wait_s)
                estimate.estimated_end_time = estimate.estimated_start_time + timedelta(seconds=own)
            found[job.id] = estimate
        return found

    def model(self, session: Session, device: DeviceType) -> RunTimeModel:
        return self.run_times.model(session, device)

    def _order(self, session: Session, device: DeviceType, fresh: bool = False) -> _DeviceOrder:
        cached = self._orders.get(device)
        if not fresh and cached is not None and time.monotonic() - cached.at < TTL_S:
            return cached
        model = self.model(session, device)
        sent = session.execute(
            select(Job.id, Job.runs, Job.duration_ns, Job.atoms)
            .where(
                Job.device_type == device,
                Job.status == JobStatus.PENDING,
                Job.dispatched_at.is_not(None),
            )
            .order_by(Job.priority_rank, Job.dispatched_at, Job.created_at, Job.creation_order)
        ).all()
        assert self.policy is not None
        backlog = self.policy.pick(session, device, EXACT_UP_TO, utcnow(), lock=False)
        ahead: dict[str, int] = {}
        expected_ahead: dict[str, float] = {}
        total = 0.0
        for position, row in enumerate([*sent, *backlog]):
            ahead[row.id] = position
            expected_ahead[row.id] = total
            total += model.predict(row.runs, row.duration_ns, row.atoms) or 0.0
        running_left = self._running_left(session, device, model)
        order = _DeviceOrder(
            time.monotonic(), ahead, expected_ahead, running_left, self._slots(device),
            complete=len(backlog) < EXACT_UP_TO,
        )  # fmt: skip
        self._orders[device] = order
        return order

    def _running_left(self, session: Session, device: DeviceType, model: RunTimeModel) -> float:
        now = utcnow()
        left = 0.0
        for row in session.execute(
            select(Job.runs, Job.duration_ns, Job.atoms, Job.start_timestamp).where(
                Job.device_type == device,
                Job.status == JobStatus.RUNNING,
                Job.dispatched_at.is_not(None),
            )
        ):
            expected = model.predict(row.runs, row.duration_ns, row.atoms) or 0.0
            started = row.start_timestamp or now
            left += max(0.0, expected - (now - started).total_seconds())
        return left

    def _slots(self, device: DeviceType) -> int:
        try:
            slots = live_slots(self.client, self.keys, device)
        except redis.RedisError:
            return 0
        capacity = entry(device).capacity
        return min(slots, capacity) if capacity is not None else slots

    def _approximate_ahead(self, session: Session, job: Job) -> int:
        """The jobs waiting on the job's device at its level or above, but itself."""
        return -1 + int(
            session.scalar(
                select(func.coalesce(func.sum(JobCount.n), 0)).where(
                    JobCount.device_type == job.device_type,
                    JobCount.status == JobStatus.PENDING,
                    JobCount.priority_rank <= job.priority_rank,
                )
            )
            or 0
        )
