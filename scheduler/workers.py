"""What the workers say about themselves in Redis: who is consuming, with how many slots."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis

from core.enums import DeviceType
from core.names import WORKER_HEARTBEAT_TTL_S, RedisKeys


@dataclass(frozen=True)
class WorkerView:
    name: str
    concurrency: int
    busy: int


def live_workers(client: redis.Redis, keys: RedisKeys, device: DeviceType) -> list[WorkerView]:
    """The device's workers that beat (and so were consuming) in the last heartbeat TTL."""
    return live_workers_of(client, keys, [device])[device]


def live_workers_of(
    client: redis.Redis, keys: RedisKeys, devices: Iterable[DeviceType]
) -> dict[DeviceType, list[WorkerView]]:
    """`live_workers` of several devices in two round trips, whatever their number."""
    devices = list(devices)
    since = time.time() - WORKER_HEARTBEAT_TTL_S
    pipe = client.pipeline(transaction=False)
    for device in devices:
        pipe.zrangebyscore(keys.workers(device), since, "+inf")
    members: list[Any] = pipe.execute()
    names = {
        device: [m.decode() if isinstance(m, bytes) else str(m) for m in found]
        for device, found in zip(devices, members, strict=True)
    }
    pipe = client.pipeline(transaction=False)
    for device in devices:
        if names[device]:
            pipe.hmget(keys.worker_info(device), names[device])
    infos = iter(pipe.execute())
    views: dict[DeviceType, list[WorkerView]] = {}
    for device in devices:
        found = next(infos) if names[device] else []
        views[device] = [
            WorkerView(name, _int(info, "concurrency", 1), _int(info, "busy", 0))
            for name, info in zip(names[device], found, strict=True)
        ]
    return views


def live_slots(client: redis.Redis, keys: RedisKeys, device: DeviceType) -> int:
    return sum(w.concurrency for w in live_workers(client, keys, device))


def _int(raw: bytes | None, name: str, default: int) -> int:
    try:
        value = json.loads(raw).get(name, default) if raw else default
    except (ValueError, AttributeError):
        return default
    return value if isinstance(value, int) else default
