"""Each served device's Pulser specs, and the limits they imply, from the catalog's source.

- MOCK: Pulser's MockDevice named after the device type, carrying atomfleet's limits.
- QPU: what the QPU itself answers (`GET /system`), fetched by the scheduler's QPU watch
  and kept in Redis, so the API never waits on the QPU.
- FRESNEL (EMU_FRESNEL): the FRESNEL QPU's specs when it is configured and has answered,
  else the reference FRESNEL device (Pulser's AnalogDevice under that name, as the shipped
  simulator serves it), renamed EMU_FRESNEL: a sequence valid there is valid on the QPU.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any

import redis
from pulser.devices import AnalogDevice, MockDevice
from pulser.devices._device_datacls import BaseDevice
from pulser.json.abstract_repr.deserializer import deserialize_device

from core.catalog import Limits, SpecsSource, entry
from core.config import Settings
from core.enums import DeviceType
from core.names import RedisKeys

FRESNEL_REFERENCE = dataclasses.replace(AnalogDevice, name="FRESNEL")
# atomfleet's limit -> the Pulser device field that states it
_LIMIT_FIELDS = {
    "max_atoms": "max_atom_num",
    "max_duration_ns": "max_sequence_duration",
    "max_runs": "max_runs",
}


def _limit_fields(limits: Limits) -> dict[str, Any]:
    """The Pulser device fields `limits` sets."""
    return {field: getattr(limits, name) for name, field in _LIMIT_FIELDS.items()}


@functools.lru_cache(maxsize=32)
def mock_device(device_type: DeviceType, limits: Limits) -> BaseDevice:
    """MockDevice named after the device type, carrying our limits: a sequence built on it
    names its device type, and Pulser refuses on the client what intake would refuse."""
    return dataclasses.replace(MockDevice, name=device_type.value, **_limit_fields(limits))


@functools.lru_cache(maxsize=16)
def _parse(specs_json: str) -> BaseDevice:
    return deserialize_device(specs_json)


class DeviceSpecs:
    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self.settings = settings
        self.client = client
        self.keys = RedisKeys(settings.namespace)

    def device(self, device_type: DeviceType) -> BaseDevice | None:
        """The device's Pulser specs; None for a QPU that has not answered yet."""
        source = entry(device_type).specs
        if source == SpecsSource.MOCK:
            return mock_device(device_type, self.settings.limits(device_type))
        if source == SpecsSource.QPU:
            return self._qpu(device_type)
        qpu = self._qpu(DeviceType.FRESNEL) if DeviceType.FRESNEL in self.settings.qpus else None
        device = dataclasses.replace(qpu or FRESNEL_REFERENCE, name=device_type.value)
        # Published as accepted: the QPU's specs, tightened by this emulator's own limits.
        tighter = {
            field: value
            for field, value in _limit_fields(self.limits(device_type, device)).items()
            if getattr(device, field) is None or value < getattr(device, field)
        }
        return dataclasses.replace(device, **tighter) if tighter else device

    def _qpu(self, device_type: DeviceType) -> BaseDevice | None:
        try:
            raw = self.client.hget(self.keys.device_state(device_type), "specs")
        except redis.RedisError:
            return None
        return _parse(raw.decode()) if isinstance(raw, bytes) else None

    def limits(self, device_type: DeviceType, device: BaseDevice | None = None) -> Limits:
        """atomfleet's limits, tightened by what the device's specs say."""
        limits = self.settings.limits(device_type)
        device = device or self.device(device_type)
        if device is None or entry(device_type).specs == SpecsSource.MOCK:
            return limits
        tighter: dict[str, Any] = {}
        for name, field in _LIMIT_FIELDS.items():
            spec = getattr(device, field)
            if spec is not None and spec < getattr(limits, name):
                tighter[name] = int(spec)
        return limits.merged(tighter)

    def abstract_reprs(self) -> dict[str, str]:
        """`{device_type: abstract repr}` of the served devices whose specs are known."""
        found = {}
        for device_type in self.settings.devices:
            device = self.device(device_type)
            if device is not None:
                found[device_type.value] = _to_json(device)
        return found

    def operational(self, device_type: DeviceType) -> str | None:
        """A QPU's last known status (UP, DOWN or UNREACHABLE); None for other devices."""
        if entry(device_type).specs != SpecsSource.QPU:
            return None
        try:
            raw = self.client.hget(self.keys.device_state(device_type), "operational")
        except redis.RedisError:
            return "UNREACHABLE"
        return raw.decode() if isinstance(raw, bytes) else "UNREACHABLE"


def _to_json(device: BaseDevice) -> str:
    text = device.to_abstract_repr()
    return text if isinstance(text, str) else json.dumps(text)
