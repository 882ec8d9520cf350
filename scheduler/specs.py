"""Each served device's Pulser specs, and the limits they imply, from the catalog's source.

- MOCK: Pulser's MockDevice named after the device type, carrying atomfleet's limits.
- QPU: what the QPU itself answers (`GET /system`), fetched by the scheduler's QPU watch
  and kept in Redis, so the API never waits on the QPU.
- MIRROR (EMU_FRESNEL): the specs of the QPU the catalog says it `mirrors`, when that QPU
  is configured and has answered, else the reference device (Pulser's AnalogDevice under
  the QPU's name, as the shipped simulator serves it), renamed after the device: a sequence
  valid there is valid on the QPU.
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
from scheduler.device_state import DeviceState

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


@functools.lru_cache(maxsize=8)
def reference_device(qpu: DeviceType) -> BaseDevice:
    """The QPU's specs before it has answered: AnalogDevice under its name."""
    return dataclasses.replace(AnalogDevice, name=qpu.value)


@functools.lru_cache(maxsize=16)
def _parse(specs_json: str) -> BaseDevice:
    return deserialize_device(specs_json)


class DeviceSpecs:
    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self.settings = settings
        self.client = client
        self.keys = RedisKeys(settings.namespace)
        self.state = DeviceState(client, self.keys)

    def device(self, device_type: DeviceType) -> BaseDevice | None:
        """The device's Pulser specs; None for a QPU that has not answered yet."""
        device_entry = entry(device_type)
        if device_entry.specs == SpecsSource.MOCK:
            return mock_device(device_type, self.settings.limits(device_type))
        if device_entry.specs == SpecsSource.QPU:
            return self._qpu(device_type)
        mirrored = device_entry.mirrors
        assert mirrored is not None, f"{device_type.value}: a MIRROR entry names what it mirrors"
        qpu = self._qpu(mirrored) if mirrored in self.settings.qpus else None
        device = dataclasses.replace(qpu or reference_device(mirrored), name=device_type.value)
        # Published as accepted: the QPU's specs, tightened by this emulator's own limits.
        tighter = {
            field: value
            for field, value in _limit_fields(self.limits(device_type, device)).items()
            if getattr(device, field) is None or value < getattr(device, field)
        }
        return dataclasses.replace(device, **tighter) if tighter else device

    def _qpu(self, device_type: DeviceType) -> BaseDevice | None:
        try:
            raw = self.state.specs_json(device_type)
        except redis.RedisError:
            return None
        return _parse(raw) if raw is not None else None

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


def _to_json(device: BaseDevice) -> str:
    text = device.to_abstract_repr()
    return text if isinstance(text, str) else json.dumps(text)
