"""Every process's Redis client.

A command on a pooled connection that Redis or the network dropped since (a restart, a
proxy, an idle timeout) is retried on a new connection, twice, with a short backoff,
instead of failing whatever it was for: the first job a worker takes after a broker blip,
a cancel flag, a dispatch. What atomfleet sends is safe to repeat: claims are idempotent
for their holder, wake-ups and flags are idempotent, events are applied once per attempt.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

RETRIES = 2


def redis_client(url: str, **options: Any) -> redis.Redis:
    """`redis.Redis.from_url(url, **options)`, with the retries above. Only a connection
    error is retried (reset, refused: at once); a timeout is not, so that an unreachable
    Redis costs one timeout, not three."""
    retry = Retry(
        ExponentialBackoff(cap=0.5, base=0.05), RETRIES, supported_errors=(redis.ConnectionError,)
    )
    return redis.Redis.from_url(url, retry=retry, **options)
