"""A worker's heartbeat, which says it is consuming, and the watchdog that checks it is.

A worker is alive when it consumes, not when a thread of it runs: a Celery consumer can
lose its broker connection mid-ack and never consume again while its process lives on.
The watchdog sees that as "a free slot, messages waiting in my queues, and nothing
received for `stall_after_s`": it stops the heartbeat (the device no longer counts it)
and exits the process, so that its supervisor (Kubernetes, systemd, `atomfleet run`)
starts a fresh one. Its jobs are not lost: their messages wait in the queue, or their
leases lapse and the scheduler requeues them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable

import redis

from core.enums import DeviceType
from core.health import Health
from core.names import WORKER_HEARTBEAT_S, WORKER_HEARTBEAT_TTL_S, RedisKeys, device_queues

log = logging.getLogger(__name__)


class Heartbeat:
    def __init__(
        self,
        client: Callable[[], redis.Redis],
        keys: RedisKeys,
        device: DeviceType,
        concurrency: int,
        stall_after_s: float,
        job_time_limit_s: float,
        busy: Callable[[], int],
    ) -> None:
        self.client = client
        self.keys = keys
        self.device = device
        self.concurrency = concurrency
        self.stall_after_s = stall_after_s
        self.job_time_limit_s = job_time_limit_s
        self.busy = busy
        self.member = f"{socket.gethostname()}:{os.getpid()}"
        self.received = 0  # messages the consumer received (a Celery signal counts them)
        self._stop = threading.Event()
        self._stalled_since: float | None = None
        self._received_then = 0
        self._beat_at: float | None = None  # monotonic time of the last beat that landed

    def start(self) -> None:
        threading.Thread(target=self._run, name="heartbeat", daemon=True).start()

    def on_received(self) -> None:
        self.received += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self._stuck():
                    self._exit()
                    return
                self._beat()
            except redis.RedisError as exc:
                log.warning("worker heartbeat failed: %s", exc)
            self._stop.wait(WORKER_HEARTBEAT_S)

    def _beat(self) -> None:
        now = time.time()
        info = {
            "concurrency": self.concurrency,
            "busy": self.busy(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }
        pipe = self.client().pipeline(transaction=False)
        pipe.zadd(self.keys.workers(self.device), {self.member: now})
        pipe.hset(self.keys.worker_info(self.device), self.member, json.dumps(info))
        pipe.zremrangebyscore(self.keys.workers(self.device), 0, now - 3600)
        pipe.execute()
        self._beat_at = time.monotonic()

    def health(self) -> Health:
        """Healthy while the heartbeat says this worker consumes: it beat within the
        heartbeat TTL (as the scheduler counts live workers) and its watchdog has not found
        it stuck. Slots busy on long jobs are healthy: the beat goes on meanwhile."""
        if self._stop.is_set():
            return Health(False, "stopped consuming (stuck, or shutting down)")
        if self._beat_at is None:
            return Health(False, "not consuming yet")
        silent_s = time.monotonic() - self._beat_at
        if silent_s > WORKER_HEARTBEAT_TTL_S:
            return Health(False, f"no heartbeat for {silent_s:.0f} s (Redis?)")
        return Health(True, f"consuming; {self.busy()} of {self.concurrency} slots busy")

    def _stuck(self) -> bool:
        """True once messages waited with a slot free and nothing received for long."""
        pipe = self.client().pipeline(transaction=False)
        for queue in device_queues(self.device):
            pipe.llen(self.keys.celery_queue(queue))
        waiting = sum(pipe.execute())
        idle_slot = self.busy() < self.concurrency
        if not (waiting and idle_slot) or self.received != self._received_then:
            self._stalled_since = None
            self._received_then = self.received
            return False
        now = time.monotonic()
        if self._stalled_since is None:
            self._stalled_since = now
        return now - self._stalled_since >= self.stall_after_s

    def _exit(self) -> None:
        log.error(
            "worker %s has not consumed for %.0f s while %s jobs wait: exiting so that it "
            "is restarted",
            self.member,
            self.stall_after_s,
            self.device.value,
        )
        self.stop()
        os.kill(os.getpid(), signal.SIGTERM)  # warm shutdown: running jobs finish
        # A consumer in this state may not shut down cleanly: once the running jobs are
        # done (or after the job time limit), give it a little time, then go.
        deadline = time.monotonic() + self.job_time_limit_s
        while self.busy() and time.monotonic() < deadline:
            time.sleep(1.0)
        time.sleep(5.0)
        os._exit(70)

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(redis.RedisError):
            pipe = self.client().pipeline(transaction=False)
            pipe.zrem(self.keys.workers(self.device), self.member)
            pipe.hdel(self.keys.worker_info(self.device), self.member)
            pipe.execute()
