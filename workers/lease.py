"""The lease a worker holds on the job it runs, renewed by a background thread.

The scheduler re-queues a running job whose lease expired: its worker is gone.
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType

import redis

log = logging.getLogger(__name__)


class Lease:
    def __init__(self, client: redis.Redis, key: str, holder: str, ttl_s: int) -> None:
        self.client = client
        self.key = key
        self.holder = holder
        self.ttl_s = ttl_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="lease", daemon=True)

    def acquire(self) -> bool:
        """Take the lease unless another live holder has it."""
        taken = self.client.set(self.key, self.holder, nx=True, ex=self.ttl_s)
        if not taken:
            return False
        self._thread.start()
        return True

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                # Plain SET also restores the lease after a Redis restart.
                self.client.set(self.key, self.holder, ex=self.ttl_s)
            except redis.RedisError:
                log.warning("could not renew lease %s", self.key)

    def release(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        try:
            if self.client.get(self.key) == self.holder.encode():
                self.client.delete(self.key)
        except redis.RedisError:
            log.warning("could not release lease %s; it will expire", self.key)

    def __enter__(self) -> Lease:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
