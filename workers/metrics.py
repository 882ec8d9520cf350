"""A worker's metrics: the jobs its prefork children ran, served by its parent.

The children count (multiprocess mode, `workers.multiproc`); the parent serves the sum of
every child's files, with its build info, on `worker_metrics_port`, and `/healthz` from
its heartbeat: healthy while it consumes, busy slots included.
"""

from __future__ import annotations

import logging
import os

from prometheus_client import Counter, Histogram
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import CollectorRegistry

from core.config import Settings
from core.enums import DeviceType, EventKind
from core.health import HealthCheck
from core.metrics import JOB_SECONDS, new_registry
from core.metrics_http import MetricsServer
from workers.multiproc import ENV

log = logging.getLogger(__name__)

OUTCOMES = (EventKind.DONE, EventKind.ERROR)


class WorkerMetrics:
    """Recorded in the children; the metrics are not in any registry (the parent reads the
    children's files instead)."""

    def __init__(self, device_type: DeviceType) -> None:
        self.device = device_type.value
        self.jobs = Counter(
            "atomfleet_worker_jobs_total",
            "Jobs this worker ran, by outcome.",
            ["device_type", "status"],
            registry=None,
        )
        self.duration = Histogram(
            "atomfleet_worker_job_duration_seconds",
            "A job's time in the worker: from taking it to reporting its end.",
            ["device_type"],
            buckets=JOB_SECONDS,
            registry=None,
        )
        # Both outcomes exist from the start, at 0, so that the first job is an increase.
        for outcome in OUTCOMES:
            self.jobs.labels(self.device, outcome.value)
        self.duration.labels(self.device)

    def ran(self, outcome: EventKind, seconds: float) -> None:
        self.jobs.labels(self.device, outcome.value).inc()
        self.duration.labels(self.device).observe(seconds)


def served_registry() -> CollectorRegistry:
    """The parent's registry: every process's files summed, the build info, and the process
    metrics of the parent and its pool children together."""
    registry = new_registry(process_tree=True)
    if ENV in os.environ:
        MultiProcessCollector(registry, path=os.environ[ENV])  # type: ignore[no-untyped-call]
    return registry


def serve(settings: Settings, health: HealthCheck) -> MetricsServer | None:
    """`/metrics` and `/healthz` on `worker_metrics_port`; None when that is 0."""
    if not settings.worker_metrics_port:
        return None
    try:
        server = MetricsServer(
            settings.metrics_host, settings.worker_metrics_port, served_registry(), health
        ).start()
    except OSError as exc:  # the worker still runs jobs; its probes will say it is not healthy
        log.error(
            "cannot serve metrics on %s:%d: %s",
            settings.metrics_host,
            settings.worker_metrics_port,
            exc,
        )
        return None
    log.info("worker metrics on port %d (/metrics, /healthz)", server.port)
    return server
