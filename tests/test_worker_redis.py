"""The worker's Redis client on real Redis: a job claimed over a pooled connection that the
network dropped is still claimed (the client reconnects and retries), and a retried claim of the
same holder is not mistaken for another copy of the job."""

from __future__ import annotations

import time
import uuid

import redis

from core.config import Settings
from core.enums import DeviceType
from core.names import RedisKeys
from tests.proxy import CuttableProxy
from workers.app import worker_redis
from workers.lease import Claim, Leases


def test_a_claim_over_a_connection_the_network_dropped_reconnects(
    settings: Settings, redis_client: redis.Redis, redis_url: str
) -> None:
    # Given a worker's client, through a proxy, whose pooled connection was cut since
    host, port = redis_url.split("//")[1].split("/")[0].split(":")
    proxy = CuttableProxy(host, int(port))
    try:
        proxied = settings.model_copy(
            update={"redis_url": redis_url.replace(f":{port}", f":{proxy.port}")}
        )
        client = worker_redis(proxied)
        leases = Leases(client, RedisKeys(settings.namespace), ttl_s=30)
        client.ping()
        proxy.cut()
        time.sleep(0.1)
        # When it claims a job, the claim succeeds on a new connection
        job = str(uuid.uuid4())
        claim = leases.claim(job, 1, "1:host:1", DeviceType.NOOP, "{}", announce=False)
        assert claim == Claim.OK
        assert redis_client.get(RedisKeys(settings.namespace).lease(job)) == b"1:host:1"
    finally:
        proxy.close()


def test_a_retried_claim_is_ok_for_its_holder_only(
    settings: Settings, redis_client: redis.Redis
) -> None:
    leases = Leases(worker_redis(settings), RedisKeys(settings.namespace), ttl_s=30)
    job = str(uuid.uuid4())
    assert leases.claim(job, 1, "1:host:1", DeviceType.NOOP, "{}", announce=False) == Claim.OK
    # the same claim again (its reply was lost): still ours
    assert leases.claim(job, 1, "1:host:1", DeviceType.NOOP, "{}", announce=False) == Claim.OK
    # another copy of the attempt, elsewhere: taken
    assert leases.claim(job, 1, "1:host:2", DeviceType.NOOP, "{}", announce=False) == Claim.TAKEN
    # and once the job has ended, its holder cannot claim it again
    assert leases.finish(job, "", retry_for_s=0)
    assert leases.claim(job, 1, "1:host:1", DeviceType.NOOP, "{}", announce=False) == Claim.TAKEN
