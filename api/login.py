"""Password hashing for /oauth/token, off the event loop in a small bounded pool.

argon2id costs tens of milliseconds of CPU and ~19 MiB a hash: at most `threads` run at once
and `queue` more wait; a login beyond that is refused at once (503 with Retry-After) rather
than queued without bound, so a burst of logins never takes the API's other requests down.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from core.errors import AtomfleetError

T = TypeVar("T")


class HashingBusy(AtomfleetError):
    """Every hashing thread is busy and the queue is full."""


class PasswordHashing:
    def __init__(self, threads: int, queue: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="password")
        self.capacity = threads + queue
        # Touched on the event loop only (the login route is async): no lock needed.
        self.in_flight = 0

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """`fn(*args)` in the pool; HashingBusy when `capacity` calls are in flight."""
        if self.in_flight >= self.capacity:
            raise HashingBusy
        self.in_flight += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        finally:
            self.in_flight -= 1

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
