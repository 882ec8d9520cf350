"""The scheduler's gauges, computed at scrape time from the store and Redis.

Nothing here is kept in memory between scrapes: every value is what the store and Redis
say now (`scheduler.fleet_state`), so it is exact after restarts, and a scrape costs a few
statements and two Redis round trips whatever the number of jobs. A part that cannot be
read (the database or Redis down) is left out of that scrape and logged; the rest is
served, and the `/healthz` of the loops says whether the scheduler works.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator

import redis
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from core.catalog import entry
from core.enums import DeviceStatus, DeviceType, JobStatus
from core.metrics import priority_label
from core.names import RedisKeys
from scheduler.device_state import DeviceState
from scheduler.fleet_state import (
    RANKS,
    DeviceFleet,
    StoreState,
    events_backlog,
    read_fleet,
    read_store,
)
from scheduler.loop_clock import LoopClock

log = logging.getLogger(__name__)

STATEMENT_TIMEOUT_MS = 5000


def _gauge(name: str, doc: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"atomfleet_{name}", doc, labels=list(labels))


class FleetCollector(Collector):
    def __init__(
        self,
        sessions: sessionmaker[Session],
        client: redis.Redis,
        keys: RedisKeys,
        devices: Iterable[DeviceType],
        clock: LoopClock,
    ) -> None:
        self.sessions = sessions
        self.client = client
        self.keys = keys
        self.devices = list(devices)
        self.clock = clock

    def describe(self) -> Iterator[Metric]:
        """The families without samples (the registry would otherwise collect to learn them)."""
        yield from self._store_families(None)
        yield from self._redis_families(None, None)
        yield from self._process_families()

    def collect(self) -> Iterator[Metric]:
        store: StoreState | None = None
        try:
            with self.sessions() as session:
                if session.get_bind().dialect.name == "postgresql":
                    # A scrape gives up long before Prometheus gives up on it (10 s).
                    session.execute(text(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}"))
                store = read_store(session, self.devices)
        except SQLAlchemyError as exc:
            log.warning("metrics: the store could not be read: %s", exc)
        if store is not None:
            yield from self._store_families(store)
        fleet: dict[DeviceType, DeviceFleet] | None = None
        backlog: int | None = None
        try:
            fleet = read_fleet(self.client, self.keys, self.devices)
            backlog = events_backlog(self.client, self.keys)
        except redis.RedisError as exc:
            log.warning("metrics: Redis could not be read: %s", exc)
        if fleet is not None:
            yield from self._redis_families(fleet, backlog)
        yield from self._process_families()

    def _store_families(self, store: StoreState | None) -> Iterator[Metric]:
        waiting = _gauge("jobs_waiting", "PENDING jobs.", ["device_type", "priority"])
        running = _gauge("jobs_running", "RUNNING jobs.", ["device_type"])
        jobs = _gauge("jobs", "Jobs in the store by status.", ["device_type", "status"])
        batches = _gauge("batches_open", "Batches PENDING or RUNNING.")
        oldest = _gauge(
            "oldest_waiting_job_age_seconds",
            "Age of the oldest PENDING job (0 when none waits).",
            ["device_type"],
        )
        if store is not None:
            now = time.time()
            for device in sorted(set(self.devices) | store.devices()):
                d = device.value
                for rank in RANKS:
                    waiting.add_metric([d, priority_label(rank)], store.waiting(device, rank))
                running.add_metric([d], store.by_status(device, JobStatus.RUNNING))
                for status in JobStatus:
                    jobs.add_metric([d, status.value], store.by_status(device, status))
                since = store.oldest_waiting.get(device)
                oldest.add_metric([d], max(0.0, now - since.timestamp()) if since else 0.0)
            batches.add_metric([], store.batches_open)
        yield from (waiting, running, jobs, batches, oldest)

    def _redis_families(
        self, fleet: dict[DeviceType, DeviceFleet] | None, backlog: int | None
    ) -> Iterator[Metric]:
        workers = _gauge("workers", "Live consuming workers.", ["device_type"])
        slots = _gauge("worker_slots", "Worker slots, busy or idle.", ["device_type", "status"])
        stalled = _gauge(
            "device_stalled",
            "1 while the device's workers claim free slots but take no waiting job.",
            ["device_type"],
        )
        events = _gauge("events_backlog", "Worker events not yet applied to the store.")
        for device, state in sorted((fleet or {}).items()):
            workers.add_metric([device.value], state.workers)
            slots.add_metric([device.value, "busy"], state.busy)
            slots.add_metric([device.value, "idle"], state.idle)
            stalled.add_metric([device.value], int(state.stalled))
        if backlog is not None:
            events.add_metric([], backlog)
        yield from (workers, slots, stalled, events)

    def _qpus_up(self, qpus: list[DeviceType]) -> dict[DeviceType, bool]:
        """What the scheduler's QPU watch last found (UP, DOWN or UNREACHABLE) in Redis;
        the dispatcher sends a QPU jobs only while it says UP."""
        found = DeviceState(self.client, self.keys).operational_many(qpus)
        return {device: status == DeviceStatus.UP for device, status in found.items()}

    def _process_families(self) -> Iterator[Metric]:
        qpu = _gauge("qpu_up", "QPU devices only: 1 while the QPU is up, 0 down.", ["device_type"])
        qpus = [d for d in self.devices if entry(d).dispatch_only_while_operational]
        if qpus:
            try:
                for device, up in sorted(self._qpus_up(qpus).items()):
                    qpu.add_metric([device.value], int(up))
            except redis.RedisError as exc:
                log.warning("scrape: cannot read the QPUs' status from Redis: %s", exc)
        last = _gauge(
            "scheduler_last_loop_timestamp_seconds",
            "Unix time of the least recent turn among the scheduler's loops.",
        )
        last.add_metric([], self.clock.oldest_turn())
        yield from (qpu, last)
