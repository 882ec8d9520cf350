"""Claiming a job and the leases a worker process holds on the jobs it runs.

A claim is one Redis round trip (a Lua script): drop the message if its attempt is stale
or the job was canceled, take the job's lease, and wake the dispatcher when the device's
queues ran down to the low-water mark it set (or it set none). One thread per process
then keeps what it holds: it reports RUNNING for a job still running after
`ANNOUNCE_AFTER_S` (a job that ends sooner says when it started in its final event, so
the scheduler applies one event instead of two), renews every lease, and watches the
jobs' cancel flags: a canceled job's driver is told, and in a prefork child the running
emulation is interrupted by a signal (SIGUSR1, which Celery's soft time limit uses too)
turned into an exception at its next Python instruction; the process lives on.
The scheduler requeues a running job whose lease expired: its worker is gone.
"""

from __future__ import annotations

import logging
import os
import signal
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
-- water mark for the device, the device's three queues, the job's deaths
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
-- a worker process died running this attempt: the scheduler queues a new one
if redis.call('HEXISTS', KEYS[9], ARGV[1]) == 1 then return 'stale' end
if redis.call('EXISTS', KEYS[2]) == 1 then return 'canceled' end
if not redis.call('SET', KEYS[3], ARGV[2], 'NX', 'EX', ARGV[3]) then
  -- our own claim again: the client retried it after losing the reply
  if redis.call('GET', KEYS[3]) == ARGV[2] then return 'ok' end
  return 'taken'
end
return 'ok'
"""

_FINISH = """
-- KEYS: lease, events stream; ARGV: holder, ttl, final event (JSON, or empty for none).
-- The event goes out, and the lease outlives the job by one ttl, so that the event is
-- applied before the job could look lost.
if ARGV[3] ~= '' then redis.call('XADD', KEYS[2], '*', 'event', ARGV[3]) end
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
    job_id: str
    holder: str
    running_event: str
    claimed_at: float
    announced: bool = False  # RUNNING reported (or left to the driver)
    canceled: bool = False  # its cancel flag was seen


class JobInterrupted(BaseException):
    """Raised in a running job's thread by a signal: it was canceled, or ran out of time.

    A BaseException, so that no library's `except Exception` swallows it.
    """

    def __init__(self, canceled: bool) -> None:
        super().__init__("canceled" if canceled else "time limit exceeded")
        self.canceled = canceled


class Leases:
    """The leases of one worker process, kept by one background thread."""

    def __init__(self, client: redis.Redis, keys: RedisKeys, ttl_s: int) -> None:
        self.client = client
        self.keys = keys
        self.ttl_s = ttl_s
        self._held: dict[str, _Held] = {}  # lease key -> what this process holds
        # Reentrant: the signal handler takes it in the main thread, which may hold it.
        self._lock = threading.RLock()
        self._claim = client.register_script(_CLAIM)
        self._finish = client.register_script(_FINISH)
        self._thread: threading.Thread | None = None
        self._pid = 0
        # Set in prefork children: a canceled job is interrupted by a signal (SIGUSR1).
        self.interrupt_by_signal = False
        self._interruptible: str | None = None  # the job the main thread is running now
        self._interrupting: str | None = None  # the job a signal was sent for
        self._signals_sent = 0  # ours, not yet handled

    def claim(
        self,
        job_id: str,
        attempt: int,
        holder: str,
        device: DeviceType,
        running_event: str,
        announce: bool = True,
    ) -> Claim:
        """Claim the job; with `announce`, RUNNING is reported if it runs a while, else
        when `announce_now` is called."""
        keys = [
            self.keys.current_attempt(job_id),
            self.keys.cancel_flag(job_id),
            self.keys.lease(job_id),
            self.keys.dispatch_wakeup,
            self.keys.dispatch_low_water(device),
            *(self.keys.celery_queue(q) for q in device_queues(device)),
            self.keys.deaths(job_id),
        ]
        args: list[str | int] = [attempt, holder, self.ttl_s, device, WAKEUP_LIST_MAX - 1]
        outcome = Claim(_text(self._claim(keys=keys, args=args)))
        if outcome == Claim.OK:
            held = _Held(job_id, holder, running_event, time.monotonic(), announced=not announce)
            with self._lock:
                self._held[self.keys.lease(job_id)] = held
            self._ensure_thread()
        return outcome

    def announce_now(self, job_id: str) -> None:
        """Report RUNNING now (once), for drivers that know when the device started."""
        with self._lock:
            held = self._held.get(self.keys.lease(job_id))
            event = held.running_event if held else ""
            if held:
                held.running_event = ""
        if event:
            self.client.xadd(self.keys.events_stream, {"event": event})

    def canceled(self, job_id: str) -> bool:
        with self._lock:
            held = self._held.get(self.keys.lease(job_id))
            return bool(held and held.canceled)

    def interruptible(self, job_id: str | None) -> None:
        """The main thread runs `job_id`'s driver now (None: it no longer does)."""
        with self._lock:
            self._interruptible = job_id

    def on_interrupt_signal(self) -> JobInterrupted | None:
        """What a SIGUSR1 means: our cancel of the running job, one of ours that arrived
        after the job ended (None: ignore it), or Celery's soft time limit."""
        with self._lock:
            if not self._signals_sent:
                return JobInterrupted(canceled=False)  # Celery's soft time limit
            self._signals_sent -= 1
            sent_for, self._interrupting = self._interrupting, None
            running = self._interruptible
        return JobInterrupted(canceled=True) if sent_for == running else None

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
                held = list(self._held.items())
                due = [h for _, h in held if self._due(h, now)]
            if not held:
                continue
            try:
                pipe = self.client.pipeline(transaction=False)
                for _, h in held:
                    pipe.exists(self.keys.cancel_flag(h.job_id))
                for h in due:
                    pipe.xadd(self.keys.events_stream, {"event": h.running_event})
                for key, h in held if renew else []:
                    # Plain SET also restores a lease lost with a Redis restart.
                    pipe.set(key, h.holder, ex=self.ttl_s)
                replies = pipe.execute()
            except redis.RedisError:
                log.warning("could not check, report or renew %d leases", len(held))
                continue
            for h in due:
                h.announced = True
            if renew:
                renewed_at = now
            for (_, h), flagged in zip(held, replies[: len(held)], strict=True):
                if flagged and not h.canceled:
                    self._cancel(h)

    @staticmethod
    def _due(held: _Held, now: float) -> bool:
        """RUNNING is reported for a job still running after ANNOUNCE_AFTER_S."""
        waited = now - held.claimed_at >= ANNOUNCE_AFTER_S
        return waited and not held.announced and bool(held.running_event)

    def _cancel(self, held: _Held) -> None:
        """A held job was canceled: tell its driver, and interrupt an emulation."""
        with self._lock:
            held.canceled = True
            signal_it = self.interrupt_by_signal and self._interruptible == held.job_id
            if signal_it:
                self._interrupting = held.job_id
                self._signals_sent += 1
        if signal_it:
            log.info("job %s was canceled: interrupting it", held.job_id)
            os.kill(os.getpid(), signal.SIGUSR1)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
