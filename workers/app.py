"""The Celery app factory and the `run_job` task.

One worker pool serves one device type and consumes its three queues, HIGH first.
The parent process imports the emulator (once, ~1.5 s) and then forks; it never runs
torch itself, because a forked child of a process that ran multi-threaded torch hangs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from typing import Any

import redis
from celery import Celery
from celery.signals import worker_process_init, worker_ready, worker_shutdown

from core.broker import celery_config
from core.config import Settings
from core.enums import DeviceType, EventKind
from core.errors import DriverError
from core.messages import JobEvent, JobSpec
from core.names import RUN_JOB_TASK, RedisKeys
from device_drivers.base import DeviceDriver
from device_drivers.registry import load_driver
from workers.events import EventPublisher
from workers.lease import Lease
from workers.progress import ProgressReporter

log = logging.getLogger(__name__)


class Runtime:
    """What the task needs in one worker process; Redis connects lazily after the fork."""

    def __init__(self, settings: Settings, driver: DeviceDriver) -> None:
        self.settings = settings
        self.driver = driver
        self.keys = RedisKeys(settings.namespace)
        self._client: redis.Redis | None = None
        self._pid = 0

    @property
    def client(self) -> redis.Redis:
        if self._client is None or self._pid != os.getpid():
            self._client = redis.Redis.from_url(self.settings.redis_url, socket_timeout=30)
            self._pid = os.getpid()
        return self._client

    def execute(self, payload: dict[str, Any]) -> None:
        """Run one job message: skip it if stale or canceled, else run it and report."""
        spec = JobSpec.model_validate(payload)
        client, keys = self.client, self.keys
        current = client.get(keys.current_attempt(spec.job_id))
        if current is not None and int(current) != spec.attempt:
            log.info("job %s: attempt %d is stale, dropping it", spec.job_id, spec.attempt)
            return
        if client.exists(keys.cancel_flag(spec.job_id)):
            log.info("job %s was canceled before it ran", spec.job_id)
            return
        holder = f"{spec.attempt}:{socket.gethostname()}:{os.getpid()}"
        lease = Lease(client, keys.lease(spec.job_id), holder, self.settings.lease_ttl_s)
        if not lease.acquire():
            log.info("job %s is already running elsewhere, dropping this copy", spec.job_id)
            return
        publisher = EventPublisher(client, keys)
        with lease:
            publisher.publish(_event(spec, EventKind.RUNNING, progress=0), retry_for_s=30)
            progress = ProgressReporter(publisher, spec, self.settings.progress_interval_s)
            try:
                result = self.driver.run(spec, progress)
                final = _event(spec, EventKind.DONE, progress=100)
                final.result = result
            except DriverError as exc:
                final = _event(spec, EventKind.ERROR)
                final.errors = [str(exc)]
            except Exception as exc:
                log.exception("job %s failed", spec.job_id)
                final = _event(spec, EventKind.ERROR)
                final.errors = [f"internal error: {type(exc).__name__}: {exc}"]
            if not publisher.publish(final, retry_for_s=300):
                # Without the event the job would look lost; the lease lapses and it re-runs.
                raise RuntimeError(f"could not report job {spec.job_id}")


def _event(spec: JobSpec, kind: EventKind, progress: int | None = None) -> JobEvent:
    return JobEvent(job_id=spec.job_id, attempt=spec.attempt, kind=kind, progress=progress)


def create_celery(settings: Settings, device_type: DeviceType) -> Celery:
    """A Celery app whose `run_job` task runs jobs of `device_type`."""
    runtime = Runtime(settings, load_driver(device_type))
    app = Celery(f"atomfleet-{device_type.value}")
    app.conf.update(celery_config(settings))

    @app.task(name=RUN_JOB_TASK, acks_late=True, reject_on_worker_lost=True)  # type: ignore[untyped-decorator]
    def run_job(payload: dict[str, Any]) -> None:
        runtime.execute(payload)

    threads = settings.torch_threads or max(1, (os.cpu_count() or 1) // settings.worker_concurrency)

    @worker_process_init.connect(weak=False)  # type: ignore[untyped-decorator]
    def _init_child(**_: Any) -> None:
        set_compute_threads(threads)

    heartbeat = Heartbeat(runtime, device_type)
    worker_ready.connect(lambda **_: heartbeat.start(), weak=False)
    worker_shutdown.connect(lambda **_: heartbeat.stop(), weak=False)
    return app


class Heartbeat:
    """Tells the API this worker serves its device (`GET /api/v1/devices` shows it UP)."""

    interval_s = 10.0

    def __init__(self, runtime: Runtime, device_type: DeviceType) -> None:
        self.runtime = runtime
        self.key = runtime.keys.workers(device_type)
        self.member = f"{socket.gethostname()}:{os.getpid()}"
        self._stop = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._beat, name="heartbeat", daemon=True).start()

    def _beat(self) -> None:
        while True:
            try:
                now = time.time()
                self.runtime.client.zadd(self.key, {self.member: now})
                self.runtime.client.zremrangebyscore(self.key, 0, now - 3600)
            except redis.RedisError:
                log.warning("worker heartbeat failed")
            if self._stop.wait(self.interval_s):
                return

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(redis.RedisError):
            self.runtime.client.zrem(self.key, self.member)


def set_compute_threads(threads: int) -> None:
    """Threads of torch in this (child) process; must run before its first torch op."""
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(threads)
