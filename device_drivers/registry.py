"""Which driver serves which device type (the catalog says); imported only when asked for."""

from __future__ import annotations

import importlib

from core.catalog import entry
from core.config import Settings
from core.enums import DeviceType
from device_drivers.base import DeviceDriver


def load_driver(device_type: DeviceType, settings: Settings) -> DeviceDriver:
    """A new driver for `device_type` (importing its emulator, ~1.5 s the first time)."""
    module = importlib.import_module(entry(device_type).driver)
    driver: DeviceDriver = module.Driver(device_type, settings)
    return driver
