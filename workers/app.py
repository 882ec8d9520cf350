"""The Celery app factory and the `run_job` task.

One worker pool serves one device type and consumes its three queues, HIGH first.
The parent process imports the emulator (once, ~1.5 s) and then forks; it never runs
torch itself, because a forked child of a process that ran multi-threaded torch hangs.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from typing import Any

import redis
from celery import Celery
from celery.signals import task_received, worker_process_init, worker_ready, worker_shutdown
from celery.worker import state as worker_state

from core.broker import celery_config, flag_ttl_s
from core.config import Settings
from core.enums import DeviceType, EventKind
from core.errors import DriverError
from core.logs import log_context
from core.messages import JobEvent, JobSpec
from core.names import RUN_JOB_TASK, RedisKeys
from core.redis_client import redis_client
from device_drivers.base import DeviceDriver, JobCanceled
from device_drivers.registry import load_driver
from workers import metrics
from workers.deaths import request_class
from workers.events import EventPublisher
from workers.heartbeat import Heartbeat
from workers.lease import Claim, JobInterrupted, Leases
from workers.metrics import WorkerMetrics
from workers.pod_cost import PodCost, PodCostUpdater
from workers.progress import ProgressReporter

log = logging.getLogger(__name__)


def worker_redis(settings: Settings) -> redis.Redis:
    """The worker's Redis client (it retries on a dropped connection: core.redis_client)."""
    return redis_client(settings.redis_url, socket_timeout=30, health_check_interval=10)


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
            self._client = worker_redis(self.settings)
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
        # Every line logged while this job runs says which job (core/logs.py).
        with log_context(
            job_id=spec.job_id, batch_id=spec.batch_id, device_type=self.device_type.value
        ):
            self._execute(spec)

    def _execute(self, spec: JobSpec) -> None:
        started_at = time.time()
        holder = f"{spec.attempt}:{socket.gethostname()}:{os.getpid()}"
        running = _event(spec, EventKind.RUNNING, started_at, progress=0)
        outcome = self.leases.claim(
            spec.job_id,
            spec.attempt,
            holder,
            self.device_type,
            running.model_dump_json(),
            announce=not self.driver.announces_start,
        )
        if outcome != Claim.OK:
            log.info("job %s attempt %d: %s, dropping this message", spec.job_id, spec.attempt,
                     outcome.value)  # fmt: skip
            return
        final = self._run(spec, started_at)
        if final:  # DONE or ERROR (a canceled job is not counted)
            self.job_metrics.ran(final.kind, time.time() - started_at)
            log.info("job %s attempt %d: %s in %.3f s", spec.job_id, spec.attempt,
                     final.kind.value, time.time() - started_at)  # fmt: skip
        report = final.model_dump_json() if final else ""
        if not self.leases.finish(spec.job_id, report, retry_for_s=300):
            # Without the event the job would look lost; the lease lapses and it re-runs.
            raise RuntimeError(f"could not report job {spec.job_id}")

    def _run(self, spec: JobSpec, started_at: float) -> JobEvent | None:
        """Run the driver; the final event to publish (None: the job was canceled)."""
        job = RunningJob(self, spec, started_at)
        if self.leases.interrupt_by_signal:
            # (billiard installs its own SIGUSR1 handler after a child starts)
            signal.signal(signal.SIGUSR1, self.on_interrupt_signal)
        try:
            self.leases.interruptible(spec.job_id)
            try:
                result = self.driver.run(spec, job)
            finally:
                self.leases.interruptible(None)
            final = _event(spec, EventKind.DONE, started_at, progress=100)
            final.result = result
        except (JobCanceled, JobInterrupted) as exc:
            if isinstance(exc, JobCanceled) or exc.canceled:
                log.info("job %s stopped: it was canceled", spec.job_id)
                return None  # the store already says CANCELED
            final = _event(spec, EventKind.ERROR, started_at)
            final.errors = [f"time limit exceeded ({self.driver.limits.time_limit_s} s)"]
        except DriverError as exc:
            final = _event(spec, EventKind.ERROR, started_at)
            final.errors = [str(exc)]
        except Exception as exc:
            log.exception("job %s failed", spec.job_id)
            final = _event(spec, EventKind.ERROR, started_at)
            final.errors = [f"internal error: {type(exc).__name__}: {exc}"]
        return final

    def on_interrupt_signal(self, signum: int, frame: Any) -> None:
        """SIGUSR1 in a prefork child: our cancel, or Celery's soft time limit."""
        interruption = self.leases.on_interrupt_signal()
        if interruption is not None:
            raise interruption


class RunningJob:
    """The JobContext a driver gets: progress, start, the device's id, cancel."""

    def __init__(self, runtime: Runtime, spec: JobSpec, started_at: float) -> None:
        self.runtime = runtime
        self.spec = spec
        self.publisher = EventPublisher(runtime.client, runtime.keys)
        self.reporter = ProgressReporter(
            self.publisher, spec, started_at, runtime.settings.progress_interval_s
        )

    def progress(self, percent: int) -> None:
        self.reporter(percent)

    def started(self) -> None:
        self.runtime.leases.announce_now(self.spec.job_id)

    def remember(self, remote_id: str, **details: str) -> None:
        keys, ttl_s = self.runtime.keys, flag_ttl_s(self.runtime.settings)
        self.runtime.client.set(keys.remote_id(self.spec.job_id), remote_id, ex=ttl_s)
        event = JobEvent(
            job_id=self.spec.job_id,
            attempt=self.spec.attempt,
            kind=EventKind.PROGRESS,
            remote_id=remote_id,
            slurm_job_id=details.get("slurm_job_id"),
            slurm_cluster_name=details.get("slurm_cluster_name"),
        )
        self.publisher.publish(event, retry_for_s=30)

    def recall(self) -> str | None:
        """The device's id an earlier attempt remembered, if Redis still has it."""
        raw = self.runtime.client.get(self.runtime.keys.remote_id(self.spec.job_id))
        return raw.decode() if isinstance(raw, bytes) else None

    def canceled(self) -> bool:
        return self.runtime.leases.canceled(self.spec.job_id)


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

    # Its Request records a pool child's death while running a job (workers/deaths.py).
    job_request = request_class(lambda: runtime.client, runtime.keys)

    @app.task(  # type: ignore[untyped-decorator]
        name=RUN_JOB_TASK, acks_late=True, reject_on_worker_lost=True, Request=job_request
    )
    def run_job(payload: dict[str, Any]) -> None:
        runtime.execute(payload)

    threads = settings.torch_threads or max(1, (os.cpu_count() or 1) // settings.worker_concurrency)

    @worker_process_init.connect(weak=False)  # type: ignore[untyped-decorator]
    def _init_child(**_: Any) -> None:
        set_compute_threads(threads)
        # A prefork child: a canceled emulation is interrupted by SIGUSR1, the signal
        # Celery's soft time limit sends too; `on_interrupt_signal` tells them apart.
        runtime.leases.interrupt_by_signal = True

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
    # In Kubernetes: busy pods carry a higher deletion cost, so a scale-down takes idle ones.
    pod_cost = PodCost.in_cluster(settings.pod_name)
    if pod_cost is not None:
        updater = PodCostUpdater(pod_cost, busy=lambda: len(worker_state.reserved_requests))
        worker_ready.connect(lambda **_: updater.start(), weak=False)
        worker_shutdown.connect(lambda **_: updater.stop(), weak=False)
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
