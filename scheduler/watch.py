"""Watches each device's workers: is anybody consuming what waits in Redis?

A device is STALLED while messages wait in its queues, its live workers report a free
slot, and the queues have not shrunk for `stall_after_s`: workers that claim to be up
but take nothing (a consumer that lost its broker connection). The state is kept in
Redis (`device_state`) for `/api/v1/devices` and logged; the workers' own watchdog makes
them exit and restart.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

import redis

from core.config import Settings
from core.enums import DeviceType
from core.names import RedisKeys, device_queues
from scheduler.device_state import DeviceState
from scheduler.workers import live_workers

log = logging.getLogger(__name__)


@dataclass
class _Seen:
    queued: int = 0
    moved_at: float = 0.0  # when the queues last shrank or were empty


class FleetWatch:
    interval_s = 5.0

    def __init__(self, settings: Settings, client: redis.Redis, devices: Iterable[DeviceType]):
        self.settings = settings
        self.client = client
        self.keys = RedisKeys(settings.namespace)
        self.state = DeviceState(client, self.keys)
        self.devices = list(devices)
        self._seen = {d: _Seen(moved_at=time.monotonic()) for d in self.devices}

    def watch_once(self) -> dict[DeviceType, bool]:
        """Update every device's stalled state; returns it."""
        pipe = self.client.pipeline(transaction=False)
        for device in self.devices:
            for queue in device_queues(device):
                pipe.llen(self.keys.celery_queue(queue))
        lengths = pipe.execute()
        per = len(device_queues(self.devices[0])) if self.devices else 0
        now = time.monotonic()
        stalled = {}
        for i, device in enumerate(self.devices):
            queued = sum(lengths[i * per : (i + 1) * per])
            seen = self._seen[device]
            if queued == 0 or queued < seen.queued:
                seen.moved_at = now
            seen.queued = queued
            workers = live_workers(self.client, self.keys, device)
            free = sum(max(0, w.concurrency - w.busy) for w in workers)
            stalled[device] = bool(
                queued and free and now - seen.moved_at >= self.settings.stall_after_s
            )
            self._record(device, stalled[device], queued)
        return stalled

    def _record(self, device: DeviceType, stalled: bool, queued: int) -> None:
        was = self.state.stalled_since(device)
        if stalled and was is None:
            log.error(
                "%s is STALLED: %d jobs wait in Redis and its workers report free slots, but "
                "none was taken for %.0f s",
                device.value,
                queued,
                self.settings.stall_after_s,
            )
            self.state.mark_stalled(device, True)
        elif not stalled and was is not None:
            log.warning("%s consumes again", device.value)
            self.state.mark_stalled(device, False)
