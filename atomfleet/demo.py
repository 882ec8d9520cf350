"""The demo `atomfleet run` submits: one parametrized sweep, three variable sets per emulator
and on the (simulated) FRESNEL QPU."""

from __future__ import annotations

from typing import Any

from atomfleet.examples import parametrized_sweep
from core.enums import DeviceType

DEMO_VARIABLES = [
    {"omega": 3.0, "duration": 400},
    {"omega": 6.0, "duration": 800},
    {"omega": 9.0, "duration": 1200},
]
DEMO_DEVICES = [DeviceType.EMU_MPS, DeviceType.EMU_SV, DeviceType.EMU_FREE, DeviceType.FRESNEL]


def demo_sequence() -> str:
    """A 4-atom (2×2) adiabatic sweep on AnalogDevice, parametrized by `omega` and `duration`."""
    return parametrized_sweep(4, rows=2, detuning=15.0)


def demo_request(project_id: str, device_type: str, sequence: str) -> dict[str, Any]:
    return {
        "project_id": project_id,
        "device_type": device_type,
        "sequence_builder": sequence,
        "jobs": [{"runs": 200, "variables": v} for v in DEMO_VARIABLES],
        "tags": ["demo"],
    }
