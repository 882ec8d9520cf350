"""Claiming a job and the leases a worker process holds on the jobs it runs.

A claim is one Redis round trip (a Lua script): drop the message if its attempt is stale
or the job was canceled, take the job's lease, wake the dispatcher (a message left the
queue), and report RUNNING. One thread per process renews every lease it holds; the
scheduler requeues a running job whose lease expired (its worker is gone).
"""

from __future__ import annotations

import logging
import os
import threading
from enum import StrEnum

import redis

from core.names import WAKEUP_LIST_MAX, RedisKeys

log = logging.getLogger(__name__)

_CLAIM = """
-- KEYS: current attempt, cancel flag, lease, dispatcher wake-up list, events stream
-- ARGV: attempt, holder, lease ttl, device, RUNNING event (JSON)
redis.call('LPUSH', KEYS[4], ARGV[4])
redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[6]))
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] then return 'stale' end
if redis.call('EXISTS', KEYS[2]) == 1 then return 'canceled' end
if not redis.call('SET', KEYS[3], ARGV[2], 'NX', 'EX', ARGV[3]) then return 'taken' end
redis.call('XADD', KEYS[5], '*', 'event', ARGV[5])
return 'ok'
"""

_RELEASE = """
-- KEYS: lease; ARGV: holder, ttl. The lease outlives the job by one ttl, so that its final
-- event is applied before the job could look lost.
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


class Leases:
    """The leases of one worker process, renewed by one background thread."""

    def __init__(self, client: redis.Redis, keys: RedisKeys, ttl_s: int) -> None:
        self.client = client
        self.keys = keys
        self.ttl_s = ttl_s
        self._held: dict[str, str] = {}  # lease key -> holder
        self._lock = threading.Lock()
        self._claim = client.register_script(_CLAIM)
        self._release = client.register_script(_RELEASE)
        self._thread: threading.Thread | None = None
        self._pid = 0

    def claim(
        self, job_id: str, attempt: int, holder: str, device: str, running_event: str
    ) -> Claim:
        keys = [
            self.keys.current_attempt(job_id),
            self.keys.cancel_flag(job_id),
            self.keys.lease(job_id),
            self.keys.dispatch_wakeup,
            self.keys.events_stream,
        ]
        args: list[str | int] = [
            attempt,
            holder,
            self.ttl_s,
            device,
            running_event,
            WAKEUP_LIST_MAX - 1,
        ]
        outcome = Claim(_text(self._claim(keys=keys, args=args)))
        if outcome == Claim.OK:
            with self._lock:
                self._held[self.keys.lease(job_id)] = holder
            self._ensure_thread()
        return outcome

    def release(self, job_id: str) -> None:
        key = self.keys.lease(job_id)
        with self._lock:
            holder = self._held.pop(key, None)
        if holder is None:
            return
        try:
            self._release(keys=[key], args=[holder, self.ttl_s])
        except redis.RedisError:
            log.warning("could not release lease %s; it will expire", key)

    def _ensure_thread(self) -> None:
        # Started in the process that uses it (a prefork child), never inherited.
        if self._thread is None or self._pid != os.getpid():
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._renew, name="leases", daemon=True)
            self._thread.start()

    def _renew(self) -> None:
        stop = threading.Event()
        while not stop.wait(self.ttl_s / 3):
            with self._lock:
                held = dict(self._held)
            if not held:
                continue
            try:
                pipe = self.client.pipeline(transaction=False)
                for key, holder in held.items():
                    # Plain SET also restores a lease lost with a Redis restart.
                    pipe.set(key, holder, ex=self.ttl_s)
                pipe.execute()
            except redis.RedisError:
                log.warning("could not renew %d leases", len(held))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
