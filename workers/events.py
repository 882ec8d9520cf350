"""Publishes job events on the Redis stream the scheduler consumes."""

from __future__ import annotations

import logging
import time

import redis

from core.messages import JobEvent
from core.names import RedisKeys

log = logging.getLogger(__name__)


class EventPublisher:
    def __init__(self, client: redis.Redis, keys: RedisKeys) -> None:
        self.client = client
        self.keys = keys

    def publish(self, event: JobEvent, retry_for_s: float = 0.0) -> bool:
        """XADD the event; retried up to `retry_for_s` while Redis is unreachable."""
        deadline = time.monotonic() + retry_for_s
        delay = 0.2
        while True:
            try:
                self.client.xadd(self.keys.events_stream, event.to_fields())  # type: ignore[arg-type]
                return True
            except (redis.ConnectionError, redis.TimeoutError):
                if time.monotonic() >= deadline:
                    log.warning("could not publish %s of job %s", event.kind.value, event.job_id)
                    return False
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
