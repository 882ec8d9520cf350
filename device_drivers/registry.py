"""Which driver serves which device type; modules are imported only when asked for."""

from __future__ import annotations

import importlib

from core.enums import DeviceType
from device_drivers.base import DeviceDriver

_MODULES = {
    DeviceType.EMU_MPS: "device_drivers.emu_mps",
    DeviceType.EMU_TN: "device_drivers.emu_mps",
    DeviceType.EMU_SV: "device_drivers.emu_sv",
    DeviceType.EMU_FREE: "device_drivers.emu_free",
}

SUPPORTED = frozenset(_MODULES)


def load_driver(device_type: DeviceType) -> DeviceDriver:
    """A new driver for `device_type` (importing its emulator, ~1.5 s the first time)."""
    if device_type not in _MODULES:
        raise LookupError(f"no driver for {device_type.value}")
    module = importlib.import_module(_MODULES[device_type])
    driver: DeviceDriver = module.Driver()
    return driver
