"""The devices this deployment serves, their Pulser specs, and their state."""

from __future__ import annotations

import dataclasses
import functools
import time

import redis
from pulser.devices import MockDevice
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.enums import DeviceType, JobStatus
from core.names import RedisKeys
from scheduler.models import Job

WORKER_HEARTBEAT_TTL_S = 30


@functools.lru_cache(maxsize=16)
def spec(device_type: DeviceType) -> str:
    """The Pulser device (abstract repr) of an emulator: unconstrained, named after its type.

    A sequence built on it names its device type, so `device_type` can be left out.
    """
    device = dataclasses.replace(MockDevice, name=device_type.value)
    return str(device.to_abstract_repr())


def specs(devices: list[DeviceType]) -> dict[str, str]:
    return {d.value: spec(d) for d in devices if d.is_emulator}


def live_workers(client: redis.Redis, keys: RedisKeys, device_type: DeviceType) -> int:
    since = time.time() - WORKER_HEARTBEAT_TTL_S
    return int(client.zcount(keys.workers(device_type), since, "+inf"))


def job_counts(session: Session, devices: list[DeviceType]) -> dict[DeviceType, dict[str, int]]:
    rows = session.execute(
        select(Job.device_type, Job.status, func.count())
        .where(Job.status.in_([JobStatus.PENDING, JobStatus.RUNNING]))
        .group_by(Job.device_type, Job.status)
    ).all()
    counts = {d: {"PENDING": 0, "RUNNING": 0} for d in devices}
    for device, status, n in rows:
        if device in counts:
            counts[device][status.value] = n
    return counts
