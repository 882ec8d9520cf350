"""Small Pulser sequences for tests and the demo: 3-4 atoms, so emulators stay fast."""

from __future__ import annotations

from pulser import Pulse, Register, Sequence
from pulser.devices import AnalogDevice, MockDevice
from pulser.register.special_layouts import SquareLatticeLayout
from pulser.waveforms import RampWaveform


def parametrized_sweep(atoms: int = 3) -> str:
    """An adiabatic sweep on AnalogDevice with variables omega (float) and duration (int)."""
    layout = SquareLatticeLayout(4, 4, 6.0)
    reg = (
        layout.rectangular_register(1, atoms)
        if atoms <= 4
        else layout.rectangular_register(2, atoms // 2)
    )
    seq = Sequence(reg, AnalogDevice)
    seq.declare_channel("ryd", "rydberg_global")
    omega = seq.declare_variable("omega")
    duration = seq.declare_variable("duration", dtype=int)
    seq.add(Pulse.ConstantDetuning(RampWaveform(duration, 0.0, omega), -10.0, 0.0), "ryd")
    seq.add(Pulse.ConstantAmplitude(omega, RampWaveform(duration, -10.0, 10.0), 0.0), "ryd")
    seq.measure("ground-rydberg")
    return seq.to_abstract_repr()


def plain(atoms: int = 3) -> str:
    """A non-parametrized sequence on MockDevice."""
    reg = Register.rectangle(1, atoms, spacing=6.0, prefix="q")
    seq = Sequence(reg, MockDevice)
    seq.declare_channel("ryd", "rydberg_global")
    seq.add(Pulse.ConstantPulse(300, 5.0, 0.0, 0.0), "ryd")
    seq.measure("ground-rydberg")
    return seq.to_abstract_repr()
