"""The scheduler's operations gauges, read at scrape time: dispatchable jobs and Redis memory.

- `atomfleet_jobs_dispatchable{device_type}`: the PENDING jobs that the dispatcher would
  send if workers were free, i.e. `atomfleet_jobs_waiting` less the jobs held back by
  their project's `max_running_per_device` cap. KEDA scales on it (plus running jobs), so
  one capped project's backlog does not drive a device to its maximum replicas.
  A capped project's share is `min(its backlog, max(0, cap - its jobs in flight))`.
  The cost is one statement over the backlog of capped projects only (the partial
  `ix_jobs_backlog` index), with the device totals from the maintained `job_counts`.
- `atomfleet_redis_memory_used_bytes` and `atomfleet_redis_memory_max_bytes`: Redis's
  `INFO memory` (`used_memory`, `maxmemory`; 0 when no limit is set). With `noeviction`,
  a full Redis refuses every write: dispatch, events and heartbeats stop.

A part that cannot be read is left out of the scrape and logged, as in
`scheduler.collector`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

import redis
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from core.enums import DeviceType, JobStatus
from scheduler.models import BACKLOG, IN_FLIGHT, Job, JobCount, Project

log = logging.getLogger(__name__)

STATEMENT_TIMEOUT_MS = 5000


def held_back(session: Session) -> dict[DeviceType, int]:
    """Per device, the backlog jobs that their project's running cap keeps from dispatch."""
    capped = select(Project.id).where(Project.max_running_per_device > 0)
    backlog = dict(
        ((device, project), int(n))
        for device, project, n in session.execute(
            select(Job.device_type, Job.project_id, func.count())
            .where(BACKLOG, Job.project_id.in_(capped))
            .group_by(Job.device_type, Job.project_id)
        )
    )
    if not backlog:
        return {}
    in_flight = dict(
        ((device, project), int(n))
        for device, project, n in session.execute(
            select(Job.device_type, Job.project_id, func.count())
            .where(IN_FLIGHT, Job.project_id.in_({p for _, p in backlog}))
            .group_by(Job.device_type, Job.project_id)
        )
    )
    caps = {
        project: cap
        for project, cap in session.execute(
            select(Project.id, Project.max_running_per_device).where(
                Project.id.in_({p for _, p in backlog})
            )
        )
    }
    held: dict[DeviceType, int] = {}
    for (device, project), waiting in backlog.items():
        room = max(0, int(caps[project] or 0) - in_flight.get((device, project), 0))
        held[device] = held.get(device, 0) + max(0, waiting - room)
    return held


def dispatchable(session: Session) -> dict[DeviceType, int]:
    """Per device, the PENDING jobs less those held back by a running cap."""
    pending = {
        device: int(n or 0)
        for device, n in session.execute(
            select(JobCount.device_type, func.sum(JobCount.n))
            .where(JobCount.status == JobStatus.PENDING)
            .group_by(JobCount.device_type)
        )
    }
    held = held_back(session)
    return {device: max(0, n - held.get(device, 0)) for device, n in pending.items()}


class OpsCollector(Collector):
    def __init__(
        self, sessions: sessionmaker[Session], client: redis.Redis, devices: Iterable[DeviceType]
    ) -> None:
        self.sessions = sessions
        self.client = client
        self.devices = list(devices)

    def describe(self) -> Iterator[Metric]:
        yield from self._store(None)
        yield from self._redis(None)

    def collect(self) -> Iterator[Metric]:
        found: dict[DeviceType, int] | None = None
        try:
            with self.sessions() as session:
                if session.get_bind().dialect.name == "postgresql":
                    session.execute(text(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}"))
                found = dispatchable(session)
        except SQLAlchemyError as exc:
            log.warning("metrics: the dispatchable jobs could not be read: %s", exc)
        if found is not None:
            yield from self._store(found)
        memory: dict[str, int] | None = None
        try:
            info = self.client.info("memory")
            memory = {"used": int(info["used_memory"]), "max": int(info.get("maxmemory", 0))}
        except (redis.RedisError, KeyError, ValueError) as exc:
            log.warning("metrics: Redis's memory could not be read: %s", exc)
        if memory is not None:
            yield from self._redis(memory)

    def _store(self, found: dict[DeviceType, int] | None) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "atomfleet_jobs_dispatchable",
            "PENDING jobs not held back by their project's running cap (KEDA's demand).",
            labels=["device_type"],
        )
        if found is not None:
            for device in sorted(set(self.devices) | set(found)):
                family.add_metric([device.value], found.get(device, 0))
        yield family

    def _redis(self, memory: dict[str, int] | None) -> Iterator[Metric]:
        used = GaugeMetricFamily(
            "atomfleet_redis_memory_used_bytes", "Redis's used_memory (INFO memory)."
        )
        most = GaugeMetricFamily(
            "atomfleet_redis_memory_max_bytes",
            "Redis's maxmemory (INFO memory); 0 when Redis has no limit.",
        )
        if memory is not None:
            used.add_metric([], memory["used"])
            most.add_metric([], memory["max"])
        yield from (used, most)
