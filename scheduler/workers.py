"""What the workers say about themselves in Redis: who is consuming, with how many slots."""

from __future__ import annotations

import json
import time
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
    since = time.time() - WORKER_HEARTBEAT_TTL_S
    members: Any = client.zrangebyscore(keys.workers(device), since, "+inf")
    names = [m.decode() if isinstance(m, bytes) else str(m) for m in members]
    if not names:
        return []
    infos: Any = client.hmget(keys.worker_info(device), names)
    return [
        WorkerView(name, _int(info, "concurrency", 1), _int(info, "busy", 0))
        for name, info in zip(names, infos, strict=True)
    ]


def live_slots(client: redis.Redis, keys: RedisKeys, device: DeviceType) -> int:
    return sum(w.concurrency for w in live_workers(client, keys, device))


def _int(raw: bytes | None, name: str, default: int) -> int:
    try:
        value = json.loads(raw).get(name, default) if raw else default
    except (ValueError, AttributeError):
        return default
    return value if isinstance(value, int) else default
