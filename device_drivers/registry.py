"""Which driver serves which device type (the catalog says); imported only when asked for."""

from __future__ import annotations

import importlib

from core.catalog import entry
from core.config import Settings
from core.enums import Backend, DeviceType
from device_drivers.base import DeviceDriver

SLURM_DRIVER = "device_drivers.slurm"


def load_driver(
    device_type: DeviceType, settings: Settings, *, local: bool = False
) -> DeviceDriver:
    """A new driver for `device_type` (importing its emulator, ~1.5 s the first time).

    A device routed to SLURM gets the SLURM driver (it submits the job to the cluster),
    unless `local`: the job itself, on a compute node (`atomfleet slurm-job`)."""
    routed = settings.backend(device_type) == Backend.SLURM and not local
    module = importlib.import_module(SLURM_DRIVER if routed else entry(device_type).driver)
    driver: DeviceDriver = module.Driver(device_type, settings)
    return driver
