"""A device's live state, kept by the scheduler in one Redis hash, and its public status.

The hash (`RedisKeys.device_state`) is written by the scheduler's watches and read by the
dispatcher, the collector, the specs, `/api/v1/devices` and `atomfleet status`; its field
names live only here. Fields:
- `stalled_since` (Unix time): while its workers claim free slots but take nothing
  (`watch.py`);
- for a device with `dispatch_only_while_operational` (a QPU), `operational` (UP, DOWN or
  UNREACHABLE), `checked_at` (Unix time) and `specs` (its Pulser device JSON), written by
  `qpu_watch.py`.
The hash has no expiry: a watch overwrites what it saw, and a QPU's specs stay served while
it does not answer.

`public_status` is the one rule both the API and the command line apply.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import redis

from core.catalog import entry
from core.enums import DeviceStatus, DeviceType
from core.names import RedisKeys

STALLED_SINCE = "stalled_since"
OPERATIONAL = "operational"
CHECKED_AT = "checked_at"
SPECS = "specs"


def public_status(
    device_type: DeviceType, workers: int, stalled: bool, operational: DeviceStatus | None
) -> DeviceStatus:
    """UP while a worker consumes the device's queues (and, for a device dispatched to only
    while operational, it says UP); STALLED while its workers take nothing; else DOWN."""
    if entry(device_type).dispatch_only_while_operational and operational != DeviceStatus.UP:
        return DeviceStatus.DOWN  # a QPU that is down, does not answer, or was never checked
    if not workers:
        return DeviceStatus.DOWN
    return DeviceStatus.STALLED if stalled else DeviceStatus.UP


def _status(raw: bytes | str | None) -> DeviceStatus | None:
    if raw is None:
        return None
    try:
        return DeviceStatus(raw.decode() if isinstance(raw, bytes) else raw)
    except ValueError:
        return DeviceStatus.UNREACHABLE


class DeviceState:
    """Reads and writes the devices' live-state hashes."""

    def __init__(self, client: redis.Redis, keys: RedisKeys) -> None:
        self.client = client
        self.keys = keys

    # stalled_since (the fleet watch)
    def stalled_since(self, device_type: DeviceType) -> float | None:
        raw = self.client.hget(self.keys.device_state(device_type), STALLED_SINCE)
        return None if raw is None else float(raw)

    def mark_stalled(self, device_type: DeviceType, stalled: bool) -> None:
        key = self.keys.device_state(device_type)
        if stalled:
            self.client.hset(key, STALLED_SINCE, time.time())
        else:
            self.client.hdel(key, STALLED_SINCE)

    # operational, checked_at, specs (the QPU watch)
    def record_check(
        self, device_type: DeviceType, status: DeviceStatus, specs_json: str | None = None
    ) -> None:
        fields: dict[str, str | float] = {CHECKED_AT: time.time(), OPERATIONAL: status.value}
        if specs_json is not None:
            fields[SPECS] = specs_json
        self.client.hset(self.keys.device_state(device_type), mapping=fields)  # type: ignore[arg-type]

    def operational(self, device_type: DeviceType) -> DeviceStatus | None:
        """The status the device last reported; None: never checked (or not a watched one)."""
        return _status(self.client.hget(self.keys.device_state(device_type), OPERATIONAL))

    def is_up(self, device_type: DeviceType) -> bool:
        return self.operational(device_type) == DeviceStatus.UP

    def operational_many(
        self, devices: Iterable[DeviceType]
    ) -> dict[DeviceType, DeviceStatus | None]:
        devices = list(devices)
        pipe = self.client.pipeline(transaction=False)
        for device in devices:
            pipe.hget(self.keys.device_state(device), OPERATIONAL)
        return {d: _status(raw) for d, raw in zip(devices, pipe.execute(), strict=True)}

    def specs_json(self, device_type: DeviceType) -> str | None:
        raw = self.client.hget(self.keys.device_state(device_type), SPECS)
        return raw.decode() if isinstance(raw, bytes) else None

    def read_many(
        self, devices: Iterable[DeviceType]
    ) -> dict[DeviceType, tuple[bool, DeviceStatus | None]]:
        """`{device: (stalled, operational)}` in one round trip."""
        devices = list(devices)
        pipe = self.client.pipeline(transaction=False)
        for device in devices:
            pipe.hmget(self.keys.device_state(device), [STALLED_SINCE, OPERATIONAL])
        return {
            device: (stalled is not None, _status(operational))
            for device, (stalled, operational) in zip(devices, pipe.execute(), strict=True)
        }
