"""Keeps each configured QPU's operational status and specs in Redis.

The scheduler asks every `qpu_poll_s` (specs every minute, since calibration changes
them); the API and the dispatcher read what it wrote, so neither waits on a QPU. While a
QPU is not UP, the dispatcher sends it nothing and its jobs wait PENDING.
"""

from __future__ import annotations

import json
import logging
import time

import redis

from core.config import Settings
from core.enums import DeviceStatus, DeviceType
from core.names import RedisKeys
from core.qpu_api import QpuClient, QpuError
from scheduler.device_state import DeviceState

log = logging.getLogger(__name__)

SPECS_EVERY_S = 60.0


class QpuWatch:
    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self.settings = settings
        self.client = client
        self.state = DeviceState(client, RedisKeys(settings.namespace))
        self.qpus = {
            device: QpuClient(url, settings.qpu_token, timeout_s=5.0, retries=1)
            for device, url in settings.qpus.items()
            if device in settings.devices
        }
        self._specs_at: dict[DeviceType, float] = {}
        self._last: dict[DeviceType, DeviceStatus] = {}

    def watch_once(self) -> dict[DeviceType, DeviceStatus]:
        """Ask every QPU; returns each one's status (UP, DOWN or UNREACHABLE)."""
        found = {}
        for device, qpu in self.qpus.items():
            specs = None
            try:
                status = DeviceStatus.UP if qpu.operational() else DeviceStatus.DOWN
                if time.monotonic() - self._specs_at.get(device, -SPECS_EVERY_S) >= SPECS_EVERY_S:
                    specs = json.dumps(qpu.specs())
                    self._specs_at[device] = time.monotonic()
            except QpuError as exc:
                status = DeviceStatus.UNREACHABLE
                if self._last.get(device) != status:
                    log.warning("QPU %s is unreachable: %s", device.value, exc)
            if self._last.get(device) != status:
                log.info("QPU %s is %s", device.value, status)
            self._last[device] = found[device] = status
            self.state.record_check(device, status, specs)
        return found
