"""The demo `atomfleet run` submits: one parametrized sweep, three variable sets per emulator
and on the (simulated) FRESNEL QPU."""

from __future__ import annotations

from typing import Any

from core.enums import DeviceType

DEMO_VARIABLES = [
    {"omega": 3.0, "duration": 400},
    {"omega": 6.0, "duration": 800},
    {"omega": 9.0, "duration": 1200},
]
DEMO_DEVICES = [DeviceType.EMU_MPS, DeviceType.EMU_SV, DeviceType.EMU_FREE, DeviceType.FRESNEL]


def demo_sequence() -> str:
    """A 4-atom adiabatic sweep on AnalogDevice, parametrized by `omega` and `duration`."""
    from pulser import Pulse, Sequence
    from pulser.devices import AnalogDevice
    from pulser.register.special_layouts import SquareLatticeLayout
    from pulser.waveforms import RampWaveform

    register = SquareLatticeLayout(4, 4, 6.0).rectangular_register(2, 2)
    seq = Sequence(register, AnalogDevice)
    seq.declare_channel("ryd", "rydberg_global")
    omega = seq.declare_variable("omega")
    duration = seq.declare_variable("duration", dtype=int)
    seq.add(Pulse.ConstantDetuning(RampWaveform(duration, 0.0, omega), -15.0, 0.0), "ryd")
    seq.add(Pulse.ConstantAmplitude(omega, RampWaveform(duration, -15.0, 15.0), 0.0), "ryd")
    seq.measure("ground-rydberg")
    return str(seq.to_abstract_repr())


def demo_request(project_id: str, device_type: str, sequence: str) -> dict[str, Any]:
    return {
        "project_id": project_id,
        "device_type": device_type,
        "sequence_builder": sequence,
        "jobs": [{"runs": 200, "variables": v} for v in DEMO_VARIABLES],
        "tags": ["demo"],
    }
