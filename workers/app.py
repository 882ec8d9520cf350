"""The Celery app factory and the `run_job` task.

One worker pool serves one device type and consumes its three queues, HIGH first.
The parent process imports the emulator (once, ~1.5 s) and then forks; it never runs
torch itself, because a forked child of a process that ran multi-threaded torch hangs.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any

import redis
from celery import Celery
from celery.signals import task_received, worker_process_init, worker_ready, worker_shutdown
from celery.worker import state as worker_state

from core.broker import celery_config
from core.config import Settings
from core.enums import DeviceType, EventKind
from core.errors import DriverError
from core.messages import JobEvent, JobSpec
from core.names import RUN_JOB_TASK, RedisKeys
from device_drivers.base import DeviceDriver
from device_drivers.registry import load_driver
from workers import metrics
from workers.events import EventPublisher
from workers.heartbeat import Heartbeat
from workers.lease import Claim, Leases
from workers.metrics import WorkerMetrics
from workers.progress import ProgressReporter

log = logging.getLogger(__name__)


class Runtime:
    """What the task needs in one worker process; Redis connects lazily after the fork."""

    def __init__(
        self,
        settings: Settings,
        device_type: DeviceType,
        driver: DeviceDriver,
        job_metrics: WorkerMetrics,
    ) -> None:
        self.settings = settings
        self.device_type = device_type
        self.driver = driver
        self.job_metrics = job_metrics
        self.keys = RedisKeys(settings.namespace)
        self._client: redis.Redis | None = None
        self._leases: Leases | None = None
        self._pid = 0

    @property
    def client(self) -> redis.Redis:
        if self._client is None or self._pid != os.getpid():
            self._client = redis.Redis.from_url(
                self.settings.redis_url, socket_timeout=30, health_check_interval=10
            )
            self._leases = Leases(self._client, self.keys, self.settings.lease_ttl_s)
            self._pid = os.getpid()
        return self._client

    @property
    def leases(self) -> Leases:
        _ = self.client
        assert self._leases is not None
        return self._leases

    def execute(self, payload: dict[str, Any]) -> None:
        """Run one job message: drop it if stale, canceled or taken, else run it and report."""
        spec = JobSpec.model_validate(payload)
        started_at = time.time()
        holder = f"{spec.attempt}:{socket.gethostname()}:{os.getpid()}"
        running = _event(spec, EventKind.RUNNING, started_at, progress=0)
        outcome = self.leases.claim(
            spec.job_id, spec.attempt, holder, self.device_type, running.model_dump_json()
        )
        if outcome != Claim.OK:
            log.info("job %s attempt %d: %s, dropping this message", spec.job_id, spec.attempt,
                     outcome.value)  # fmt: skip
            return
        publisher = EventPublisher(self.client, self.keys)
        progress = ProgressReporter(publisher, spec, started_at, self.settings.progress_interval_s)
        try:
            result = self.driver.run(spec, progress)
            final = _event(spec, EventKind.DONE, started_at, progress=100)
            final.result = result
        except DriverError as exc:
            final = _event(spec, EventKind.ERROR, started_at)
            final.errors = [str(exc)]
        except BaseException as exc:
            log.exception("job %s failed", spec.job_id)
            final = _event(spec, EventKind.ERROR, started_at)
            final.errors = [f"internal error: {type(exc).__name__}: {exc}"]
            if not isinstance(exc, Exception):  # the process is going: let the lease lapse
                self.job_metrics.ran(final.kind, time.time() - started_at)
                raise
        self.job_metrics.ran(final.kind, time.time() - started_at)
        if not self.leases.finish(spec.job_id, final.model_dump_json(), retry_for_s=300):
            # Without the event the job would look lost; the lease lapses and it re-runs.
            raise RuntimeError(f"could not report job {spec.job_id}")


def _event(
    spec: JobSpec, kind: EventKind, started_at: float, progress: int | None = None
) -> JobEvent:
    return JobEvent(
        job_id=spec.job_id,
        attempt=spec.attempt,
        kind=kind,
        progress=progress,
        started_at=started_at,
    )


def create_celery(settings: Settings, device_type: DeviceType) -> Celery:
    """A Celery app whose `run_job` task runs jobs of `device_type`."""
    runtime = Runtime(
        settings, device_type, load_driver(device_type, settings), WorkerMetrics(device_type)
    )
    app = Celery(f"atomfleet-{device_type.value}")
    app.conf.update(celery_config(settings))

    @app.task(name=RUN_JOB_TASK, acks_late=True, reject_on_worker_lost=True)  # type: ignore[untyped-decorator]
    def run_job(payload: dict[str, Any]) -> None:
        runtime.execute(payload)

    threads = settings.torch_threads or max(1, (os.cpu_count() or 1) // settings.worker_concurrency)

    @worker_process_init.connect(weak=False)  # type: ignore[untyped-decorator]
    def _init_child(**_: Any) -> None:
        set_compute_threads(threads)

    heartbeat = Heartbeat(
        lambda: runtime.client,
        runtime.keys,
        device_type,
        concurrency=settings.worker_concurrency,
        stall_after_s=settings.stall_after_s,
        job_time_limit_s=settings.job_time_limit_s,
        busy=lambda: len(worker_state.reserved_requests),
    )
    task_received.connect(lambda **_: heartbeat.on_received(), weak=False)
    worker_ready.connect(lambda **_: heartbeat.start(), weak=False)
    worker_shutdown.connect(lambda **_: heartbeat.stop(), weak=False)
    # Served by the parent once its pool is forked (the first children do not inherit the
    # listening socket); the children's job counts reach it through multiprocess files.
    worker_ready.connect(lambda **_: metrics.serve(settings, heartbeat.health), weak=False)
    return app


def set_compute_threads(threads: int) -> None:
    """Threads of torch in this (child) process; must run before its first torch op."""
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(threads)
