"""The served device: a real Pulser device, so that specs and validation are Pulser's own."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, cast

from pulser.devices import AnalogDevice, Device


def simulated_device(name: str) -> Device:
    """Pulser's AnalogDevice under `name`: FRESNEL-like, layouts required, max_runs 2000."""
    return dataclasses.replace(AnalogDevice, name=name)


def specs_of(device: Device) -> dict[str, Any]:
    """The device's abstract representation as a dict, as `GET /system` answers it."""
    return cast(dict[str, Any], json.loads(device.to_abstract_repr()))


def with_overrides(device: Device, overrides: dict[str, Any]) -> Device:
    """`device` with some fields changed, as a calibration would change them.

    Pulser's own checks run (`dataclasses.replace` calls `__post_init__`), so an invalid
    value raises ValueError or TypeError with Pulser's message.
    """
    return dataclasses.replace(device, **overrides)
