"""Queue positions and start/finish estimates of waiting jobs (no public cloud gives these).

- Position: the jobs ahead of a PENDING job on its device: those already handed to Redis
  (HIGH first, then in the order sent), then the backlog in the dispatch policy's order
  (the policy itself is asked, without locking). A device's first `EXACT_UP_TO` positions
  are exact; a deeper job gets an approximation: the other jobs waiting on its device at
  its level or above (maintained counts, no scan).
- Run time: scheduler.run_times' model, learned per device from its last DONE jobs.
- Start: now + (what the running jobs still need + the expected run time of the jobs
  ahead) / the device's parallel slots (live worker slots, at most its capacity); end:
  start + the job's own expected run time. Unknown (null) without workers or a model.

Who computes an order: the scheduler (`OrderPublisher`, its `positions` loop), for the
devices whose order the API read in the last `WANTED_S`, every `REFRESH_S` (or
`COST_SHARE` times what publishing all of them costs, so that it never takes more than a
tenth of the scheduler's time), and publishes it in Redis (`OrderBoard`); an API request reads its
page's positions from there with one HMGET. A job newer than a published order that held
every waiting job asks the scheduler for a new one and waits for it (at most
`ASK_WAIT_S`). Without a publishing scheduler the API computes the order itself, at most
every `LOCAL_TTL_S` per device.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any

import redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

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
REFRESH_S = 2.0  # a wanted order is republished this often...
COST_SHARE = 10  # ...or once per this many times what publishing every wanted order costs
ASKED_COST_SHARE = 4  # an order asked for (a newer job) at most once per this many costs
WANTED_S = 30.0  # an order is published while the API read it this recently
WAKE_S = 0.5  # the publisher looks at what is wanted at least this often
ALIVE_S = 5.0  # a publisher not seen for this long is gone: the API computes itself
ASK_WAIT_S = 2.0  # how long a request waits for an order it asked for
ASK_POLL_S = 0.02
LOCAL_TTL_S = 2.0
_META = "~meta"


@dataclass
class Order:
    """A device's queue order, or the part of it a request read (`ahead` and
    `expected_ahead` then hold only the jobs asked for)."""

    at: float  # Unix time it was computed
    ahead: dict[str, int]  # job id -> jobs ahead of it (exact for the first EXACT_UP_TO)
    expected_ahead: dict[str, float]  # job id -> expected seconds of the jobs ahead
    running_left_s: float
    slots: int
    complete: bool  # every waiting job of the device is in it
    answers: int = 0  # the last request for a new order (OrderBoard.ask) it answers

    def meta(self) -> dict[str, Any]:
        """The fields published beside the positions (`asdict` would copy those too)."""
        return {name: getattr(self, name) for name in _META_FIELDS}


# What is published beside the positions: every field of an order but its two maps.
_META_FIELDS = tuple(f.name for f in fields(Order) if f.name not in ("ahead", "expected_ahead"))


@dataclass
class Estimate:
    queue_position: int | None = None
    estimated_start_time: datetime | None = None
    estimated_end_time: datetime | None = None


def compute_order(
    session: Session, device: DeviceType, policy: Policy, model: RunTimeModel, slots: int
) -> Order:
    """The device's order now: the jobs sent to Redis, then the policy's first picks."""
    now = utcnow()
    sent = session.execute(
        select(Job.id, Job.runs, Job.duration_ns, Job.atoms)
        .where(
            Job.device_type == device,
            Job.status == JobStatus.PENDING,
            Job.dispatched_at.is_not(None),
        )
        .order_by(Job.priority_rank, Job.dispatched_at, Job.created_at, Job.creation_order)
    ).all()
    backlog = policy.pick(session, device, EXACT_UP_TO, now, lock=False)
    ahead: dict[str, int] = {}
    expected_ahead: dict[str, float] = {}
    total = 0.0
    for position, row in enumerate([*sent, *backlog]):
        ahead[row.id] = position
        expected_ahead[row.id] = total
        total += model.predict(row.runs, row.duration_ns, row.atoms) or 0.0
    running_left = 0.0
    for row in session.execute(
        select(Job.runs, Job.duration_ns, Job.atoms, Job.start_timestamp).where(
            Job.device_type == device,
            Job.status == JobStatus.RUNNING,
            Job.dispatched_at.is_not(None),
        )
    ):
        expected = model.predict(row.runs, row.duration_ns, row.atoms) or 0.0
        started = row.start_timestamp or now
        running_left += max(0.0, expected - (now - started).total_seconds())
    return Order(
        now.timestamp(), ahead, expected_ahead, running_left, slots,
        complete=len(backlog) < EXACT_UP_TO,
    )  # fmt: skip


def device_slots(client: redis.Redis, keys: RedisKeys, device: DeviceType) -> int:
    """The device's parallel slots: its live workers', at most its capacity (0 if unknown)."""
    try:
        slots = live_slots(client, keys, device)
    except redis.RedisError:
        return 0
    capacity = entry(device).capacity
    return min(slots, capacity) if capacity is not None else slots


class OrderBoard:
    """The published orders in Redis: per device a hash, job id -> "ahead expected_ahead",
    plus its meta (JSON) under `~meta`, replaced whole (RENAME) so that a read never mixes
    two orders; requests for a new order (a counter and a wake-up list); a key that says a
    publisher is alive."""

    def __init__(self, client: redis.Redis, keys: RedisKeys) -> None:
        self.client = client
        self.keys = keys

    # the API's side

    def read(self, device: DeviceType, ids: Sequence[str]) -> tuple[Order | None, bool]:
        """The published order's part for `ids` (None: none published) and whether a
        publisher is alive; marks the device's order as wanted."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hmget(self.keys.queue_order(device), [_META, *ids])
        pipe.set(self.keys.queue_order_wanted(device), 1, ex=int(WANTED_S))
        pipe.exists(self.keys.queue_order_publisher)
        found, _, alive = pipe.execute()
        return _parse(found, ids), bool(alive)

    def ask(self, device: DeviceType) -> int:
        """Asks the publisher for a new order of `device`; the number of this request."""
        pipe = self.client.pipeline(transaction=False)
        pipe.incr(self.keys.queue_order_asked(device))
        pipe.lpush(self.keys.queue_order_wakeup, device.value)
        pipe.ltrim(self.keys.queue_order_wakeup, 0, 99)
        asked, *_ = pipe.execute()
        return int(asked)

    def answer(
        self, device: DeviceType, asked: int, ids: Sequence[str], wait_s: float
    ) -> Order | None:
        """The first published order that answers request `asked` (None after `wait_s`)."""
        deadline = time.monotonic() + wait_s
        while True:
            meta = self.client.hget(self.keys.queue_order(device), _META)
            if meta is not None and json.loads(meta)["answers"] >= asked:
                order, _ = self.read(device, ids)
                if order is not None and order.answers >= asked:
                    return order
            if time.monotonic() >= deadline:
                return None
            time.sleep(ASK_POLL_S)

    # the publisher's side

    def wanted(self, devices: Sequence[DeviceType]) -> dict[DeviceType, int]:
        """The devices whose order was read lately, with the last request for a new one;
        says that a publisher is alive."""
        pipe = self.client.pipeline(transaction=False)
        pipe.set(self.keys.queue_order_publisher, 1, ex=int(ALIVE_S))
        for device in devices:
            pipe.exists(self.keys.queue_order_wanted(device))
            pipe.get(self.keys.queue_order_asked(device))
        _, *found = pipe.execute()
        return {
            device: int(asked or 0)
            for device, wanted, asked in zip(devices, found[::2], found[1::2], strict=True)
            if wanted
        }

    def wait(self, timeout_s: float) -> None:
        """Until a request for a new order arrives, at most `timeout_s`."""
        if self.client.blpop([self.keys.queue_order_wakeup], timeout=timeout_s) is not None:
            self.client.delete(self.keys.queue_order_wakeup)

    def publish(self, device: DeviceType, order: Order) -> None:
        key = self.keys.queue_order(device)
        staged = f"{key}:staged"
        fields = {
            job_id: f"{position} {order.expected_ahead[job_id]:.3f}"
            for job_id, position in order.ahead.items()
        }
        fields[_META] = json.dumps(order.meta())
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(staged)
        pipe.hset(staged, mapping=fields)  # type: ignore[arg-type]
        pipe.rename(staged, key)
        pipe.expire(key, int(WANTED_S))
        pipe.execute()


def _parse(found: list[bytes | None], ids: Sequence[str]) -> Order | None:
    raw_meta, *values = found
    if raw_meta is None:
        return None
    order = Order(**json.loads(raw_meta), ahead={}, expected_ahead={})
    for job_id, value in zip(ids, values, strict=True):
        if value is not None:
            position, expected = value.split()
            order.ahead[job_id] = int(position)
            order.expected_ahead[job_id] = float(expected)
    return order


@dataclass
class _Published:
    at: float  # monotonic
    cost_s: float
    answers: int


@dataclass
class OrderPublisher:
    """The scheduler's `positions` loop: publishes the wanted devices' orders (of any
    device: jobs may wait for one this scheduler does not serve yet)."""

    settings: Settings
    sessions: sessionmaker[Session]
    client: redis.Redis
    devices: list[DeviceType] = field(default_factory=lambda: list(DeviceType))
    run_times: RunTimes = field(default_factory=RunTimes)
    _published: dict[DeviceType, _Published] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.keys = RedisKeys(self.settings.namespace)
        self.board = OrderBoard(self.client, self.keys)
        self.policy = make_policy(self.settings, self.run_times)

    def publish_once(self) -> int:
        """Publishes each wanted order that is due; how many it published."""
        published = 0
        wanted = self.board.wanted(self.devices)
        # what publishing every wanted order once costs: each is refreshed at most once per
        # COST_SHARE times that, so that all of them take at most 1/COST_SHARE of the time
        round_s = sum(self._published[d].cost_s for d in wanted if d in self._published)
        for device, asked in wanted.items():
            if not self._due(device, asked, round_s):
                continue
            started = time.monotonic()
            with self.sessions() as session:
                model = self.run_times.model(session, device)
                order = compute_order(session, device, self.policy, model,
                                      device_slots(self.client, self.keys, device))  # fmt: skip
            order.answers = asked
            self.board.publish(device, order)
            self._published[device] = _Published(started, time.monotonic() - started, asked)
            published += 1
        return published

    def _due(self, device: DeviceType, asked: int, round_s: float) -> bool:
        last = self._published.get(device)
        if last is None:
            return True
        since = time.monotonic() - last.at
        if asked > last.answers and since >= ASKED_COST_SHARE * last.cost_s:
            return True
        return since >= max(REFRESH_S, COST_SHARE * round_s)

    def wait(self) -> None:
        self.board.wait(WAKE_S)


@dataclass
class QueueEstimator:
    """The API's side: the estimates of a page of jobs."""

    settings: Settings
    client: redis.Redis
    policy: Policy | None = None
    run_times: RunTimes = field(default_factory=RunTimes)
    _local: dict[DeviceType, tuple[float, Order]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.policy = self.policy or make_policy(self.settings, self.run_times)
        self.keys = RedisKeys(self.settings.namespace)
        self.board = OrderBoard(self.client, self.keys)

    def estimate(self, session: Session, jobs: Iterable[Job]) -> dict[str, Estimate]:
        """An estimate for each PENDING job of `jobs` (others are not waiting). May end the
        session's (read) transaction while it waits for the scheduler; its objects stay."""
        waiting: dict[DeviceType, list[Job]] = {}
        for job in jobs:
            if job.status == JobStatus.PENDING:
                waiting.setdefault(job.device_type, []).append(job)
        found: dict[str, Estimate] = {}
        for device, its_jobs in waiting.items():
            order = self._order(session, device, [job.id for job in its_jobs])
            model = self.run_times.model(session, device)
            deep: dict[int, int] = {}
            for job in its_jobs:
                found[job.id] = self._estimate(session, job, order, model, deep)
        return found

    def _estimate(
        self,
        session: Session,
        job: Job,
        order: Order | None,
        model: RunTimeModel,
        deep: dict[int, int],
    ) -> Estimate:
        ahead = order.ahead.get(job.id) if order is not None else None
        expected_ahead = order.expected_ahead.get(job.id) if order is not None else None
        if ahead is None:  # deeper than the exact part of the order, or no order
            if job.priority_rank not in deep:
                deep[job.priority_rank] = _approximate_ahead(session, job)
            ahead = deep[job.priority_rank]
            each = model.predict(None, None, None)
            expected_ahead = ahead * each if each is not None else None
        estimate = Estimate(queue_position=ahead)
        own = model.predict(job.runs, job.duration_ns, job.atoms)
        if order is not None and order.slots and expected_ahead is not None and own is not None:
            now = utcnow()
            # the running jobs went on since the order was computed
            since_s = max(0.0, now.timestamp() - order.at)
            running_left_s = max(0.0, order.running_left_s - since_s * order.slots)
            start = now + timedelta(seconds=(running_left_s + expected_ahead) / order.slots)
            estimate.estimated_start_time = start
            estimate.estimated_end_time = start + timedelta(seconds=own)
        return estimate

    def _order(self, session: Session, device: DeviceType, ids: list[str]) -> Order | None:
        """The device's order, as far as `ids` go: the scheduler's, else computed here
        (also while Redis does not answer: lists keep working)."""
        try:
            order, alive = self.board.read(device, ids)
        except redis.RedisError:  # (and no live slots known: no start estimates)
            return self._local_order(session, device, ids, redis_up=False)
        if not alive:
            return self._local_order(session, device, ids)
        if order is not None and not (order.complete and len(order.ahead) < len(ids)):
            return order
        # none published yet, or a job newer than the order: ask for a new one
        session.commit()  # a read: gives its connection back while waiting
        try:
            asked = self.board.ask(device)
            return self.board.answer(device, asked, ids, ASK_WAIT_S) or order
        except redis.RedisError:
            return order

    def _local_order(
        self, session: Session, device: DeviceType, ids: list[str], redis_up: bool = True
    ) -> Order:
        cached = self._local.get(device)
        if cached is not None and time.monotonic() - cached[0] < LOCAL_TTL_S:
            order = cached[1]
            if not (order.complete and any(i not in order.ahead for i in ids)):
                return order
        assert self.policy is not None
        model = self.run_times.model(session, device)
        slots = device_slots(self.client, self.keys, device) if redis_up else 0
        order = compute_order(session, device, self.policy, model, slots)
        self._local[device] = (time.monotonic(), order)
        return order


def _approximate_ahead(session: Session, job: Job) -> int:
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
