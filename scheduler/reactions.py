"""What the Redis side does once a transaction's status changes are committed.

Registered on the process's sessions (`make_sessionmaker(..., reactors=...)`), so no route
or loop has to remember: canceled jobs get a cancel flag (a worker drops their queued
message), and the dispatcher is woken for the devices that got new, requeued or ended
jobs.
"""

from __future__ import annotations

import redis

from core.broker import flag_ttl_s
from core.config import Settings
from core.names import WAKEUP_LIST_MAX, RedisKeys
from scheduler.ledger import Ledger, Reactor


def redis_reactor(client: redis.Redis, settings: Settings) -> Reactor:
    keys = RedisKeys(settings.namespace)
    ttl_s = flag_ttl_s(settings)

    def react(ledger: Ledger) -> None:
        wake = ledger.wake
        canceled = ledger.canceled()
        if not wake and not canceled:
            return
        pipe = client.pipeline(transaction=False)
        for move in canceled:
            pipe.set(keys.cancel_flag(move.job_id), 1, ex=ttl_s)
        if wake:
            pipe.lpush(keys.dispatch_wakeup, *sorted(d.value for d in wake))
            pipe.ltrim(keys.dispatch_wakeup, 0, WAKEUP_LIST_MAX - 1)
        pipe.execute()

    return react
