"""A job whose worker process dies: how it died, as the worker's parent process saw it.

Celery's parent process learns that the pool child running a task exited (billiard's
WorkerLostError: "Worker exited prematurely: signal 9 (SIGKILL)" or "exitcode 3"). It then
records the death under `<ns>:deaths:<job>` (attempt -> "was killed (SIGKILL)") and
releases the dead child's lease, so the scheduler requeues the job at its next
reconciliation (`reconcile_interval_s`) instead of waiting for the lease to lapse
(`lease_ttl_s + lost_grace_s`), and the job's final error names the death. The message
Celery puts back in the queue for that attempt is dropped by the claim (workers/lease.py).
A worker whose parent dies too (the whole host) leaves no record: its jobs are requeued
when their leases lapse, as before.
"""

from __future__ import annotations

import logging
import re
import socket
from typing import Any

import redis
from celery.exceptions import WorkerLostError
from celery.worker.request import Request

from core.names import RedisKeys

log = logging.getLogger(__name__)

DEATHS_TTL_S = 7 * 24 * 3600
_LOST = re.compile(r"exited prematurely: (?:signal (\d+)(?: \((\w+)\))?|exitcode (-?\d+))")

_RECORD = """
-- KEYS: deaths, lease; ARGV: attempt, reason, ttl, the dead process's lease holder
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
if redis.call('GET', KEYS[2]) == ARGV[4] then redis.call('DEL', KEYS[2]) end
return 1
"""


def death_reason(message: str) -> str:
    """`was killed (SIGKILL)` or `exited with code 3` from a WorkerLostError's message."""
    found = _LOST.search(message)
    if found is None:
        return "died"
    number, name, code = found.groups()
    if number is not None:
        return f"was killed ({name or 'signal ' + number})"
    return f"exited with code {code}"


def record_death(client: redis.Redis, keys: RedisKeys, payload: Any, pid: int, why: str) -> None:
    """Record that the process `pid` died running the job of `payload` (a run_job message)."""
    try:
        job_id, attempt = str(payload["job_id"]), int(payload["attempt"])
    except (KeyError, TypeError, ValueError):
        return
    holder = f"{attempt}:{socket.gethostname()}:{pid}"  # as Runtime.execute names it
    reason = death_reason(why)
    log.warning("job %s attempt %d: the worker process %d %s", job_id, attempt, pid, reason)
    try:
        client.eval(
            _RECORD, 2, keys.deaths(job_id), keys.lease(job_id), attempt, reason,
            DEATHS_TTL_S, holder,
        )  # fmt: skip
    except redis.RedisError as exc:  # the lease lapses instead: slower, still safe
        log.warning("could not record the death of job %s's worker: %s", job_id, exc)


def request_class(client: Any, keys: RedisKeys) -> type[Request]:
    """run_job's Celery Request class: it records a pool child's death while running it.
    `client` is a callable returning the parent's Redis client."""

    class JobRequest(Request):  # type: ignore[misc]
        def on_failure(self, exc_info: Any, send_failed_event: bool = True,
                       return_ok: bool = False) -> None:  # fmt: skip
            exc = getattr(exc_info, "exception", None)
            exc = getattr(exc, "exc", exc)  # ExceptionWithTraceback
            if isinstance(exc, WorkerLostError | SystemExit) and self.worker_pid and self.args:
                why = str(exc) if isinstance(exc, WorkerLostError) else f"exitcode {exc.code}"
                record_death(client(), keys, self.args[0], self.worker_pid, why)
            super().on_failure(exc_info, send_failed_event=send_failed_event,
                               return_ok=return_ok)  # fmt: skip

    return JobRequest
