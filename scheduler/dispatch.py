"""The dispatcher: moves backlog jobs from the store onto Celery queues.

The backlog stays in the database; Redis holds a small window of messages per device:
about `dispatch_horizon_s` of work at the rate workers take it (at least one message
per free worker slot, at most `dispatch_window_per_device`), never more than the
device's fleet-wide capacity (a QPU: one job at a time). Which jobs go out is the
policy's choice (`scheduler/policies/`). Workers consume their three queues HIGH first,
so a late HIGH job still overtakes every waiting MEDIUM one.

The dispatcher sleeps until something wakes it: a submission, a worker taking a message,
a job ending or being requeued (each pushes its device on `dispatch_wakeup`). While a
device has backlog and a full window, it polls that device's queue lengths (Redis only),
backing off up to a second.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import redis
from celery import Celery
from sqlalchemy import Row, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from core.broker import celery_config, flag_ttl_s, task_id
from core.catalog import entry
from core.config import Settings
from core.enums import ACTIVE_JOB_STATUSES, DeviceType, QueuePriority
from core.messages import JobSpec
from core.names import RUN_JOB_TASK, RedisKeys, device_queues, queue_name
from scheduler.device_state import DeviceState
from scheduler.models import Batch, Job, utcnow
from scheduler.policies import make_policy
from scheduler.policies.backlog import aged_rank
from scheduler.policies.base import Policy
from scheduler.workers import live_slots

log = logging.getLogger(__name__)

_BY_RANK = {p.rank: p for p in QueuePriority}
_MAX_POLL_S = 1.0
PROMOTE_EVERY_S = 1.0
_LOW_WATER_TTL_S = 60  # a dispatcher gone for this long: workers wake the next one always


def make_producer(settings: Settings) -> Celery:
    """A Celery app used only to publish tasks by name (no worker code is imported)."""
    app = Celery("atomfleet-scheduler")
    app.conf.update(celery_config(settings))
    return app


@dataclass
class _DeviceState:
    """What the dispatcher remembers of a device between passes."""

    backlog: bool = True  # False once a pass found it empty, until something wakes it
    queued: int = 0  # messages in its queues after the last pass
    seen_at: float = field(default_factory=time.monotonic)
    rate: float = 0.0  # messages taken by workers per second (moving average)
    slots: int = 0
    slots_at: float = 0.0
    low_water: int = -1  # as last told to the workers
    low_water_at: float = 0.0


@dataclass(frozen=True)
class _BatchPayload:
    sequence_builder: str | None
    backend_configuration: str | None
    configuration: dict[str, Any] | None


class Dispatcher:
    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        client: redis.Redis,
        producer: Celery,
        devices: Iterable[DeviceType],
        policy: Policy | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.client = client
        self.producer = producer
        self.keys = RedisKeys(settings.namespace)
        self.devices = list(devices)
        self.policy = policy or make_policy(settings)
        self.state = {d: _DeviceState() for d in self.devices}
        self._batches: OrderedDict[str, _BatchPayload] = OrderedDict()
        self._poll_s = 0.005
        self._wait_s = self._poll_s
        self._promoted_at = 0.0
        # Atomic: a message taken by a worker meanwhile is not duplicated.
        self._move = client.register_script(
            "if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 1 then "
            "redis.call('RPUSH', KEYS[2], ARGV[1]) return 1 end return 0"
        )

    # -- waking ---------------------------------------------------------------------

    def wait_for_work(self, timeout_s: float) -> None:
        """Block until something wakes us or `timeout_s` passes; note the devices named."""
        popped = self.client.blpop([self.keys.dispatch_wakeup], timeout=timeout_s)
        if popped is None:
            if timeout_s >= self.settings.dispatch_idle_wait_s:
                self._maybe_backlog(self.devices)  # the safety net: look at everything
            return
        pipe = self.client.pipeline()
        pipe.lrange(self.keys.dispatch_wakeup, 0, -1)
        pipe.delete(self.keys.dispatch_wakeup)
        rest, _ = pipe.execute()
        self._maybe_backlog(_devices_named([popped[1], *rest], self.devices))

    def _maybe_backlog(self, devices: Iterable[DeviceType]) -> None:
        for device in devices:
            self.state[device].backlog = True

    def run_once(self) -> None:
        """One dispatch pass, then sleep until woken (briefly while windows are full)."""
        self.step()
        self.wait()

    def step(self) -> None:
        """One dispatch pass; it decides how long `wait` may sleep."""
        if self.dispatch_once():
            self._wait_s = self._poll_s
            self._poll_s = min(self._poll_s * 2, _MAX_POLL_S)
        else:
            self._wait_s = self.settings.dispatch_idle_wait_s
            self._poll_s = 0.005

    def wait(self) -> None:
        """Sleep until woken, or as long as the last pass decided."""
        self.wait_for_work(self._wait_s)

    # -- dispatching ----------------------------------------------------------------

    def dispatch_once(self) -> bool:
        """Fill every device's window; True while some device has backlog it could not send."""
        if time.monotonic() - self._promoted_at >= PROMOTE_EVERY_S:
            self._promoted_at = time.monotonic()
            for device in self.devices:
                self.promote_aged(device)
        lengths = self._queue_lengths()
        starved = False
        for device in self.devices:
            state = self.state[device]
            self._observe(device, state, lengths[device])
            self._publish_low_water(device, state)
            if not state.backlog:
                continue
            room = self._room(device, state)
            if room <= 0:
                starved = True
                continue
            sent, asked = self._dispatch(device, room)
            state.queued += sent
            if sent:
                self._poll_s = 0.005
            if sent < asked:
                state.backlog = False  # nothing more (or all locked): wait to be woken
            else:
                starved = True
        return starved

    def _queue_lengths(self) -> dict[DeviceType, int]:
        pipe = self.client.pipeline(transaction=False)
        for device in self.devices:
            for queue in device_queues(device):
                pipe.llen(self.keys.celery_queue(queue))
        counts = pipe.execute()
        per = len(QueuePriority)
        return {d: sum(counts[i * per : (i + 1) * per]) for i, d in enumerate(self.devices)}

    def _observe(self, device: DeviceType, state: _DeviceState, queued: int) -> None:
        """Update the device's take rate from how much its queues drained since last time."""
        now = time.monotonic()
        elapsed = now - state.seen_at
        taken = max(0, state.queued - queued)
        if elapsed > 0:
            instant = taken / elapsed
            weight = min(1.0, elapsed / 0.5)  # about a half-second moving average
            state.rate += (instant - state.rate) * weight
        state.queued, state.seen_at = queued, now
        if now - state.slots_at > 1.0:
            state.slots = live_slots(self.client, self.keys, device)
            state.slots_at = now

    def _window(self, state: _DeviceState) -> int:
        window = max(1, state.slots, math.ceil(state.rate * self.settings.dispatch_horizon_s))
        return min(window, self.settings.dispatch_window_per_device)

    def _low_water(self, state: _DeviceState) -> int:
        """Refill once the queues hold this few messages: in larger, fewer passes."""
        return self._window(state) // 2

    def _publish_low_water(self, device: DeviceType, state: _DeviceState) -> None:
        """Workers taking messages wake us once the queues are down to the low-water mark."""
        low = self._low_water(state)
        now = time.monotonic()
        if low != state.low_water or now - state.low_water_at > _LOW_WATER_TTL_S / 2:
            self.client.set(self.keys.dispatch_low_water(device), low, ex=_LOW_WATER_TTL_S)
            state.low_water, state.low_water_at = low, now

    def _room(self, device: DeviceType, state: _DeviceState) -> int:
        window = self._window(state)
        room = window - state.queued
        if state.queued > self._low_water(state):
            return 0  # still well stocked
        if entry(device).dispatch_only_while_operational and not self._operational(device):
            return 0  # its jobs wait PENDING until the device (a QPU) is UP again
        capacity = entry(device).capacity
        if capacity is not None and room > 0:
            room = min(room, capacity - self._in_flight(device))
        return room

    def _operational(self, device: DeviceType) -> bool:
        """What the scheduler's QPU watch last saw (it polls the QPU)."""
        return DeviceState(self.client, self.keys).is_up(device)

    def _in_flight(self, device: DeviceType) -> int:
        with self.sessions() as session:
            return int(
                session.scalar(
                    select(func.count())
                    .select_from(Job)
                    .where(
                        Job.device_type == device,
                        Job.status.in_(ACTIVE_JOB_STATUSES),
                        Job.dispatched_at.is_not(None),
                    )
                )
                or 0
            )

    def _dispatch(self, device: DeviceType, room: int) -> tuple[int, int]:
        """Send up to `room` jobs of `device`; (sent, asked)."""
        with self.sessions.begin() as session:
            now = utcnow()
            rows = self.policy.pick(session, device, room, now)
            if not rows:
                return 0, room
            session.execute(
                update(Job)
                .where(Job.id.in_([r.id for r in rows]))
                .values(attempt=Job.attempt + 1, dispatched_at=now)
            )
            payloads = self._payloads(session, {r.batch_id for r in rows})
        # Committed first: if publishing fails now, the job goes back to the backlog (or
        # reconciliation sends it again).
        # A job goes to the queue of the level it is served at (aging included).
        specs = [
            (_spec(row, device, payloads[row.batch_id]), self._served_rank(row, now))
            for row in rows
        ]
        try:
            self._publish(specs)
        except Exception:
            log.exception(
                "could not publish %d jobs of %s; back to the backlog", len(specs), device
            )
            self._undispatch([spec for spec, _ in specs])
            return 0, room
        return len(specs), room

    def _payloads(self, session: Session, batch_ids: set[str]) -> dict[str, _BatchPayload]:
        """Each batch's shared message parts; cached, as they never change."""
        missing = [b for b in batch_ids if b not in self._batches]
        if missing:
            for row in session.execute(
                select(
                    Batch.id,
                    Batch.sequence_builder,
                    Batch.backend_configuration,
                    Batch.configuration,
                ).where(Batch.id.in_(missing))
            ):
                self._batches[row.id] = _BatchPayload(
                    row.sequence_builder, row.backend_configuration, row.configuration
                )
        found = {}
        for batch_id in batch_ids:
            self._batches.move_to_end(batch_id)
            found[batch_id] = self._batches[batch_id]
        while len(self._batches) > 512:
            self._batches.popitem(last=False)
        return found

    def _publish(self, specs: list[tuple[JobSpec, int]]) -> None:
        ttl_s = flag_ttl_s(self.settings)
        limits = {spec.device_type: self._time_limit_s(spec.device_type) for spec, _ in specs}
        pipe = self.client.pipeline(transaction=False)
        for spec, _ in specs:
            pipe.set(self.keys.current_attempt(spec.job_id), spec.attempt, ex=ttl_s)
        pipe.execute()
        with self.producer.producer_or_acquire() as producer, producer.batch():
            for spec, rank in specs:
                self.producer.send_task(
                    RUN_JOB_TASK,
                    args=[spec.model_dump(mode="json", exclude_none=True)],
                    queue=queue_name(spec.device_type, _BY_RANK[rank]),
                    task_id=task_id(spec.job_id, spec.attempt),
                    producer=producer,
                    # what worker logs show for the arguments (Celery's default repr of the
                    # whole sequence costs more than the rest of the message)
                    argsrepr=f"job {spec.job_id} attempt {spec.attempt}",
                    kwargsrepr="{}",
                    # the device's time limit: Celery raises SoftTimeLimitExceeded in the
                    # task (the job ends ERROR, "time limit exceeded"), then kills it
                    soft_time_limit=limits[spec.device_type],
                    time_limit=limits[spec.device_type] + 60,
                )

    def _served_rank(self, row: Row[Any], now: datetime) -> int:
        waited = (now - row.created_at).total_seconds()
        return aged_rank(row.priority_rank, waited, self.settings.aging_s)

    def promote_aged(self, device: DeviceType) -> int:
        """Move messages that aged while waiting in Redis to the next level's queue, at its
        front: workers take higher queues first, so a LOW message could otherwise starve
        behind a stream of HIGH ones. Returns how many moved."""
        moved = 0
        now = time.time()
        for rank in (2, 1):
            source = self.keys.celery_queue(queue_name(device, _BY_RANK[rank]))
            for raw in self.client.lrange(source, 0, -1):
                spec = _spec_of(raw)
                if spec is None or spec.submitted_at is None:
                    continue
                own = spec.priority_rank if spec.priority_rank is not None else rank
                served = aged_rank(own, now - spec.submitted_at, self.settings.aging_s)
                if served < rank:
                    target = self.keys.celery_queue(queue_name(device, _BY_RANK[served]))
                    moved += int(self._move(keys=[source, target], args=[raw]))
        return moved

    def _time_limit_s(self, device: DeviceType) -> int:
        return self.settings.limits(device).time_limit_s

    def _undispatch(self, specs: list[JobSpec]) -> None:
        try:
            with self.sessions.begin() as session:
                for spec in specs:
                    session.execute(
                        update(Job)
                        .where(Job.id == spec.job_id, Job.attempt == spec.attempt)
                        .values(dispatched_at=None, attempt=Job.attempt - 1)
                    )
        except Exception:
            log.exception("could not put %d jobs back; reconciliation will", len(specs))


def _devices_named(raw: list[Any], devices: list[DeviceType]) -> list[DeviceType]:
    """The devices a wake-up names; an entry naming none (or an unknown one) means all."""
    named: set[DeviceType] = set()
    for item in raw:
        value = item.decode() if isinstance(item, bytes) else str(item)
        if value in DeviceType.__members__ and DeviceType(value) in devices:
            named.add(DeviceType(value))
        else:
            return list(devices)
    return [d for d in devices if d in named]


def _spec(row: Row[Any], device: DeviceType, payload: _BatchPayload) -> JobSpec:
    sequence = row.sequence if row.sequence is not None else payload.sequence_builder
    assert sequence is not None, "intake guarantees a sequence"
    return JobSpec(
        job_id=row.id,
        batch_id=row.batch_id,
        attempt=row.attempt + 1,
        device_type=device,
        sequence=sequence,
        variables=row.variables,
        runs=row.runs,
        backend_configuration=payload.backend_configuration,
        configuration=payload.configuration,
        remote_id=row.remote_id,
        submitted_at=row.created_at.timestamp(),
        priority_rank=row.priority_rank,
    )


def _spec_of(raw: bytes | str) -> JobSpec | None:
    """The job spec a Celery message carries, if it is one of ours."""
    try:
        body = json.loads(base64.b64decode(json.loads(raw)["body"]))
        return JobSpec.model_validate(body[0][0])
    except (ValueError, KeyError, IndexError, TypeError):
        return None
