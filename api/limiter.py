"""Rate limits kept in Redis with the `limits` library (moving window), shared by replicas.

A limit is a `limits` string such as "30/minute"; identifiers name what is counted (an
endpoint and a client address, a user name). Keys live under `<namespace>:ratelimit:`.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import redis
from limits import RateLimitItem, parse
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after_s: int = 0  # when refused: seconds until the window lets one more through


class Limiter:
    def __init__(self, client: redis.Redis, namespace: str, fail_open: bool = True) -> None:
        storage = RedisStorage(
            "redis://", connection_pool=client.connection_pool, key_prefix=f"{namespace}:ratelimit"
        )
        self.strategy = MovingWindowRateLimiter(storage)
        # Redis down: let calls through (True) rather than refuse everyone.
        self.fail_open = fail_open

    def hit(self, limit: str, *identifiers: str) -> Verdict:
        """Count one call and say whether it is within `limit`."""
        item = parse(limit)
        return self._ask(item, identifiers, count=True)

    def check(self, limit: str, *identifiers: str) -> Verdict:
        """Whether one more call would be within `limit`, counting nothing."""
        return self._ask(parse(limit), identifiers, count=False)

    def _ask(self, item: RateLimitItem, identifiers: tuple[str, ...], count: bool) -> Verdict:
        try:
            ok = (
                self.strategy.hit(item, *identifiers)
                if count
                else self.strategy.test(item, *identifiers)
            )
            if ok:
                return Verdict(True)
            reset = self.strategy.get_window_stats(item, *identifiers).reset_time
        except redis.RedisError as exc:
            log.warning("rate limit not checked (Redis: %s)", exc)
            if self.fail_open:
                return Verdict(True)
            raise
        return Verdict(False, max(1, math.ceil(reset - time.time())))
