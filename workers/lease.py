"""Claiming a job and the leases a worker process holds on the jobs it runs.

A claim is one Redis round trip (a Lua script): drop the message if its attempt is stale
or the job was canceled, take the job's lease, and wake the dispatcher when the device's
queues ran down to the low-water mark it set (or it set none). One thread per process
then keeps what it holds: it reports RUNNING for a job still running after
`ANNOUNCE_AFTER_S` (a job that ends sooner says when it started in its final event, so
the scheduler applies one event instead of two), and renews every lease.
The scheduler requeues a running job whose lease expired: its worker is gone.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from enum import StrEnum

import redis

from core.enums import DeviceType
from core.names import WAKEUP_LIST_MAX, RedisKeys, device_queues

log = logging.getLogger(__name__)

ANNOUNCE_AFTER_S = 0.1

_CLAIM = """
-- KEYS: current attempt, cancel flag, lease, dispatcher wake-up list, the dispatcher's low
-- water mark for the device, the device's three queues
-- ARGV: attempt, holder, lease ttl, device, wake-up list's last index
local low = tonumber(redis.call('GET', KEYS[5]) or '-1')
local waiting = redis.call('LLEN', KEYS[6]) + redis.call('LLEN', KEYS[7])
  + redis.call('LLEN', KEYS[8])
if low < 0 or waiting <= low then
  redis.call('LPUSH', KEYS[4], ARGV[4])
  redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[5]))
end
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] then return 'stale' end
if redis.call('EXISTS', KEYS[2]) == 1 then return 'canceled' end
if not redis.call('SET', KEYS[3], ARGV[2], 'NX', 'EX', ARGV[3]) then return 'taken' end
return 'ok'
"""

_FINISH = """
-- KEYS: lease, events stream; ARGV: holder, ttl, final event (JSON). The event goes out,
-- and the lease outlives the job by one ttl, so that the event is applied before the job
-- could look lost.
redis.call('XADD', KEYS[2], '*', 'event', ARGV[3])
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1] .. ':ended', 'EX', ARGV[2])
end
return 1
"""


class Claim(StrEnum):
    OK = "ok"
    STALE = "stale"  # a newer attempt was dispatched
    CANCELED = "canceled"
    TAKEN = "taken"  # another copy of this attempt runs


@dataclass
class _Held:
    holder: str
    running_event: str
    claimed_at: float
    announced: bool = False


class Leases:
    """The leases of one worker process, kept by one background thread."""

    def __init__(self, client: redis.Redis, keys: RedisKeys, ttl_s: int) -> None:
        self.client = client
        self.keys = keys
        self.ttl_s = ttl_s
        self._held: dict[str, _Held] = {}  # lease key -> what this process holds
        self._lock = threading.Lock()
        self._claim = client.register_script(_CLAIM)
        self._finish = client.register_script(_FINISH)
        self._thread: threading.Thread | None = None
        self._pid = 0

    def claim(
        self, job_id: str, attempt: int, holder: str, device: DeviceType, running_event: str
    ) -> Claim:
        keys = [
            self.keys.current_attempt(job_id),
            self.keys.cancel_flag(job_id),
            self.keys.lease(job_id),
            self.keys.dispatch_wakeup,
            self.keys.dispatch_low_water(device),
            *(self.keys.celery_queue(q) for q in device_queues(device)),
        ]
        args: list[str | int] = [attempt, holder, self.ttl_s, device, WAKEUP_LIST_MAX - 1]
        outcome = Claim(_text(self._claim(keys=keys, args=args)))
        if outcome == Claim.OK:
            with self._lock:
                self._held[self.keys.lease(job_id)] = _Held(holder, running_event, time.monotonic())
            self._ensure_thread()
        return outcome

    def finish(self, job_id: str, final_event: str, retry_for_s: float) -> bool:
        """Publish the job's final event and release its lease, in one round trip (retried
        while Redis is unreachable); False when it could not be done in time."""
        key = self.keys.lease(job_id)
        with self._lock:
            held = self._held.pop(key, None)
        holder = held.holder if held else ""
        deadline = time.monotonic() + retry_for_s
        delay = 0.2
        while True:
            try:
                self._finish(
                    keys=[key, self.keys.events_stream], args=[holder, self.ttl_s, final_event]
                )
                return True
            except (redis.ConnectionError, redis.TimeoutError):
                if time.monotonic() >= deadline:
                    log.warning("could not report job %s", job_id)
                    return False
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _ensure_thread(self) -> None:
        # Started in the process that uses it (a prefork child), never inherited.
        if self._thread is None or self._pid != os.getpid():
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._keep, name="leases", daemon=True)
            self._thread.start()

    def _keep(self) -> None:
        renewed_at = time.monotonic()
        while True:
            time.sleep(ANNOUNCE_AFTER_S / 2)
            now = time.monotonic()
            renew = now - renewed_at >= self.ttl_s / 3
            with self._lock:
                due = [
                    h for h in self._held.values()
                    if not h.announced and now - h.claimed_at >= ANNOUNCE_AFTER_S
                ]  # fmt: skip
                held = list(self._held.items()) if renew else []
            if not due and not held:
                continue
            try:
                pipe = self.client.pipeline(transaction=False)
                for h in due:
                    pipe.xadd(self.keys.events_stream, {"event": h.running_event})
                for key, h in held:
                    # Plain SET also restores a lease lost with a Redis restart.
                    pipe.set(key, h.holder, ex=self.ttl_s)
                pipe.execute()
            except redis.RedisError:
                log.warning("could not report or renew %d leases", len(due) + len(held))
                continue
            for h in due:
                h.announced = True
            if renew:
                renewed_at = now


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
